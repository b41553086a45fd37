"""What several tabs share: the model choosers, the examples, the notes said about an input, ZeroGPU's decorator."""

from __future__ import annotations

from dataclasses import dataclass, field

import gradio as gr
import numpy as np
from PIL import Image

from ..services.input_notes import NOTHING_TO_SEE, PHOTO_TO_DIGITS
from ..examples import example_images
from ..owners import Visitor
from ..services.registry import STORE_PREFIX, ModelRegistry
from ..services.starters import DISPLAY

try:  # ZeroGPU Spaces: GPU work runs inside @spaces.GPU; elsewhere this is a no-op.
    import spaces

    gpu = spaces.GPU
except ImportError:

    def gpu(fn=None, **_):
        return fn if fn is not None else (lambda f: f)


MAX_FILE_SIZE = "50mb"  # per uploaded file (launch's max_file_size): said wherever a zip is asked for
CLASSIFY_CONCURRENCY = 16  # concurrent classify requests share forward passes (Predictor.forward_batched)
HEATMAP_MIN_SIDE = 224  # px, as shown
UPLOAD_LIMIT = MAX_FILE_SIZE.upper().replace("MB", " MB")  # as a page says it
# Before the page loads (and the Hub check says which weights serve), the choosers name the architectures only.
PLAIN_CHOICES = [(DISPLAY[a], a) for a in ("resnet18", "resnet50")]
PHOTO_LABEL = "Examples: real photos (scikit-image)"
PHOTO_LABEL_STARTERS = ("Photos (scikit-image): the offline starter models know only digits, so their answer for a "
                        "photo means nothing")


@dataclass
class PageParts:
    """The components whose contents depend on the Hub check or on the visitor, filled on every page load."""

    choosers: list[gr.Dropdown] = field(default_factory=list)  # every model chooser, the push chooser last
    photo_examples: list[gr.Dataset] = field(default_factory=list)

    def listed(self, registry: ModelRegistry, visitor: Visitor) -> dict:
        """Every chooser as the store is now for ``visitor``; the push chooser lists only models fine-tuned here."""
        choices = registry.choices(visitor)
        pushable = [(label, value) for label, value in choices if value.startswith(STORE_PREFIX)]
        return {c: gr.Dropdown(choices=pushable if c is self.choosers[-1] else choices) for c in self.choosers}

    def filled(self, registry: ModelRegistry, visitor: Visitor) -> dict:
        """:meth:`listed`, and the photo examples labelled for the weights that serve."""
        label = PHOTO_LABEL_STARTERS if registry.uses_starters else PHOTO_LABEL
        return {**self.listed(registry, visitor), **{d: gr.Dataset(label=label) for d in self.photo_examples}}


def example_folders() -> list[str]:
    """Where the example files the package ships are: what the server may serve besides its own uploads."""
    return sorted({str(p.parent) for p in example_images()})


def example_files(kind: str) -> list[list[str]]:
    """The bundled example files of one kind: "digits" or "photo"."""
    return [[str(p)] for p in example_images() if p.name.startswith("mnist-digit") == (kind == "digits")]


def add_examples(target, parts: PageParts) -> None:
    """Examples the models being served can answer first; offline, the photos are labelled for what they are."""
    gr.Examples(example_files("digits"), inputs=[target], label="Examples: real MNIST digits")
    photos = gr.Examples(example_files("photo"), inputs=[target], label=PHOTO_LABEL)
    parts.photo_examples.append(photos.dataset)


def model_chooser(parts: PageParts, label: str, value: str | None = "resnet18", **kwargs) -> gr.Dropdown:
    """A model chooser, listed afresh for each visitor on page load and after each fine-tune."""
    chooser = gr.Dropdown(choices=PLAIN_CHOICES, value=value, allow_custom_value=True, label=label, **kwargs)
    parts.choosers.append(chooser)
    return chooser


def starter_progress(progress: gr.Progress):
    def on_progress(build) -> None:
        progress(build.fraction, desc=f"{build.describe()} (first start of the app only)")

    return on_progress


def with_input_note(info: str, note: str) -> str:
    """A photo sent to a digit model, or a blank image, is said first and loudly; other notes follow the timing."""
    if note.startswith((PHOTO_TO_DIGITS, NOTHING_TO_SEE)):
        gr.Warning(note, duration=12)  # the same words stay on the page, under the answer it would cover
        return f"**{note}.**\n\n{info}"
    return f"{info} · {note}" if note else info


def image_from(image, sketch):
    """The uploaded image, else the drawing when something was drawn."""
    if image is not None:
        return image
    if isinstance(sketch, dict) and sketch.get("composite") is not None:
        composite = np.asarray(sketch["composite"])
        if composite.size and (composite.ndim == 2 or composite[..., :3].std() > 0 or composite[..., -1].max() > 0):
            return composite
    return None


def visible(heatmap):
    """The grad-CAM overlay is the size the model saw: 32 px for the starters, a speck on the page."""
    if heatmap is None or min(heatmap.size) >= HEATMAP_MIN_SIDE:
        return heatmap
    scale = -(-HEATMAP_MIN_SIDE // min(heatmap.size))
    return heatmap.resize((heatmap.width * scale, heatmap.height * scale), Image.Resampling.NEAREST)
