"""Where the app works around Gradio 6.31: each function names the upstream behaviour it avoids.

Two more live in the shape of chart data (resnet_hub.ui.charts), where the frame is built:
``curve_frame`` names every series in its first frame (a LinePlot fixes its colours from its first data), and
``latency_frame`` colours bars by "model A"/"model B" (a BarPlot keeps its first pair's colour domain).
Remove one when the Gradio version that fixes it is pinned.
"""

from __future__ import annotations

import base64
import hashlib
import io
import warnings
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd

from .. import atomic
from ..errors import ResNetHubError
from ..images import load_image

SKETCH_MAX_PIXELS = 4096 * 4096  # the canvas is 280 px; a high-DPI screen sends a few times that, never this
SKETCH_MAX_BYTES = 8 * 2**20


def user_error(e: Exception | str) -> gr.Error:
    """A message for the visitor that stays until closed (Gradio's default hides it after 10 s).

    Gradio 6.31's page strips a message's first and last characters when both are the same quote mark, as if it
    were a quoted string: "'foo' is not a model ... such as 'timm/resnet50.a1_in1k'" lost both. A full stop keeps
    them."""
    text = str(e)
    if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
        text += "."
    return gr.Error(text, duration=None, print_exception=False)


def quiet_pandas_warnings() -> None:
    """Gradio 6.31's plot components call pandas APIs that pandas 3 flags for removal, once per request."""
    warnings.filterwarnings("ignore", category=getattr(pd.errors, "Pandas4Warning", FutureWarning))


# ssr_mode=False on every path (a Space sets GRADIO_SSR_MODE=true): Gradio 6.27-6.31's SSR Node proxy reaches the
# server from loopback, so a forged "Host: localhost" passed its local-request check.
SSR_MODE = False


def uploaded_image(**kwargs) -> gr.Image:
    """A gr.Image whose upload reaches the handler as the stored file, undecoded.

    gr.Image decodes first (any format Pillow knows, up to Pillow's own 179-megapixel
    limit) and answers a bad file with a generic "could not preprocess" error that shows
    the server's path; here resnet_hub.images checks the format and the pixel count before
    decoding, and names what is wrong. (Overridden on the instance: a gr.Image subclass
    makes Gradio write a .pyi stub next to its module at import.)
    """
    component = gr.Image(type="filepath", image_mode=None, **kwargs)
    component.preprocess = _stored_upload
    return component


def _stored_upload(payload):
    if payload is None:
        return None
    if payload.path is None and (payload.url or "").startswith("data:"):
        return base64.b64decode(payload.url.partition(",")[2])
    return payload.path


def checked_sketchpad(**kwargs) -> gr.Sketchpad:
    """A gr.Sketchpad whose drawing reaches the handler checked for size before a pixel is decoded.

    gr.ImageEditor decodes the background, every layer and the composite as sent, at any size (an API
    caller can send a huge image as the "sketch"); here only the composite is read, through
    resnet_hub.images, which refuses an oversize file or header before decoding.
    """
    component = gr.Sketchpad(type="numpy", image_mode="RGB", **kwargs)
    component.preprocess = lambda payload: _checked_sketch(component, payload)
    return component


def _checked_sketch(component, payload):
    if payload is None:
        return None
    composite = payload.composite
    if payload.id is not None:
        cached = component.blob_storage.get(payload.id)
        composite = cached.composite if cached else None
    if composite is None:
        return {"background": None, "layers": [], "composite": None}
    data = composite if isinstance(composite, bytes) else getattr(composite, "path", None)
    try:
        picture = load_image(data, name="the sketch", max_pixels=SKETCH_MAX_PIXELS, max_bytes=SKETCH_MAX_BYTES)
    except ResNetHubError as e:
        raise user_error(e) from None
    return {"background": None, "layers": [], "composite": np.asarray(picture)}


def cached_picture(picture, cache_dir: str) -> str | None:
    """``picture`` as a file in Gradio's cache, written once and atomically.

    gr.Image (Gradio 6.31) saves a returned PIL image by rewriting a file named after its
    content in place, so two requests with the same overlay (the same example, clicked at
    once) can serve each other a half-written file: the load test saw ~5% of downloads cut.
    """
    if picture is None:
        return None
    buffer = io.BytesIO()
    picture.save(buffer, format="WEBP", method=0)  # the fastest encoder setting: 224 px in ~2 ms, not ~11
    data = buffer.getvalue()
    path = Path(cache_dir) / hashlib.sha256(data).hexdigest() / "heatmap.webp"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_bytes(path, data)
    return str(path)


def drawn_or_kept(frame: pd.DataFrame | None):
    """A curve to draw, or (none yet) the plot left as it is: Gradio 6.31's LinePlot set back to None unmounts its
    chart but keeps its ResizeObserver, which then throws "Cannot read properties of null (reading 'offsetWidth')"
    in the page. So a new run's curves replace the last run's at its first step."""
    return gr.skip() if frame is None else frame
