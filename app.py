"""resnet-hub: try, compare and fine-tune ResNets. The UI only: every button calls resnet_hub.

Run locally with `python app.py`; on a Hugging Face Space this file is the app.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import uuid
import warnings
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image

from resnet_hub.errors import ResNetHubError
from resnet_hub.finetune import FinetuneConfig
from resnet_hub.model import build, stage_table, weighted_layers
from resnet_hub.service import FinetuneJobs, ModelRegistry, zip_model_folder
from resnet_hub.store import model_folder
from resnet_hub.weights import load

try:  # ZeroGPU Spaces: GPU work runs inside @spaces.GPU; elsewhere this is a no-op.
    import spaces

    gpu = spaces.GPU
except ImportError:

    def gpu(fn=None, **_):
        return fn if fn is not None else (lambda f: f)


ON_SPACES = os.environ.get("SYSTEM") == "spaces"
# Gradio 6.31's plot components call pandas APIs that pandas 3 flags for removal, once per request.
warnings.filterwarnings("ignore", category=getattr(pd.errors, "Pandas4Warning", FutureWarning))
MAX_FILE_SIZE = "50mb"
QUEUE_SIZE = 64
CLASSIFY_CONCURRENCY = 4
HEATMAP_MIN_SIDE = 224  # px, as shown

registry = ModelRegistry()
jobs = FinetuneJobs(registry)


def _user_error(e: Exception) -> gr.Error:
    return gr.Error(str(e), print_exception=False)


def _progress_hook(progress: gr.Progress):
    def on_event(event) -> None:
        if event.kind == "start":
            progress(0, desc="building the starter model (first use only)")
        elif event.total_steps:
            progress(event.step / event.total_steps, desc="building the starter model (first use only)")

    return on_event


def uploaded_image(**kwargs) -> gr.Image:
    """A gr.Image whose upload reaches the handler as the stored file, undecoded.

    gr.Image decodes first (any format Pillow knows, up to Pillow's own 179-megapixel
    limit) and answers a bad file with a generic "could not preprocess" error that shows
    the server's path; here resnet_hub.images checks the format and the pixel count before
    decoding, and names what is wrong. (Overridden on the instance: a gr.Image subclass
    makes Gradio write an app.pyi stub next to this file at import.)
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


def _image_from(image, sketch):
    if image is not None:
        return image
    if isinstance(sketch, dict) and sketch.get("composite") is not None:
        composite = np.asarray(sketch["composite"])
        if composite.size and (composite.ndim == 2 or composite[..., :3].std() > 0 or composite[..., -1].max() > 0):
            return composite
    return None


# -- Classify ---------------------------------------------------------------


@gpu
def classify(image, sketch, model_choice, top_k, progress=gr.Progress()):
    try:
        result = registry.classify(_image_from(image, sketch), model_choice, int(top_k), on_event=_progress_hook(progress))
    except ResNetHubError as e:
        raise _user_error(e) from None
    info = f"**{result.model}** · {result.latency_ms:.1f} ms for this call"
    if result.note:
        info += f" · {result.note}"
    return result.prediction.as_dict(), info, _cached(_visible(result.heatmap), heatmap.GRADIO_CACHE)


def _cached(picture, cache_dir: str) -> str | None:
    """The overlay as a file in Gradio's cache, written once and atomically.

    gr.Image (Gradio 6.31) saves a returned PIL image by rewriting a file named after its
    content in place, so two requests with the same overlay (the same example, clicked at
    once) can serve each other a half-written file: the load test saw ~5% of downloads cut.
    """
    if picture is None:
        return None
    buffer = io.BytesIO()
    picture.save(buffer, format="WEBP")
    data = buffer.getvalue()
    path = Path(cache_dir) / hashlib.sha256(data).hexdigest() / "heatmap.webp"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".heatmap.{uuid.uuid4().hex}.tmp")
        staging.write_bytes(data)
        os.replace(staging, path)
    return str(path)


def _visible(heatmap):
    """The grad-CAM overlay is the size the model saw: 32 px for the starters, a speck on the page."""
    if heatmap is None or min(heatmap.size) >= HEATMAP_MIN_SIDE:
        return heatmap
    scale = -(-HEATMAP_MIN_SIDE // min(heatmap.size))
    return heatmap.resize((heatmap.width * scale, heatmap.height * scale), Image.Resampling.NEAREST)


# -- Compare ----------------------------------------------------------------


@gpu
def compare(image, sketch, model_a, model_b, progress=gr.Progress()):
    try:
        result = registry.compare(_image_from(image, sketch), (model_a, model_b), on_event=_progress_hook(progress))
    except ResNetHubError as e:
        raise _user_error(e) from None
    (name_a, pred_a), (name_b, pred_b) = list(result.predictions.items())[:2]
    verdict = (f"Top-1 **agrees**: both say *{pred_a.top1}*." if result.agree
               else f"Top-1 **differs**: *{pred_a.top1}* vs *{pred_b.top1}*.")
    table = pd.DataFrame(result.table())
    chart = pd.DataFrame(
        [{"model": row["model"], "measure": m, "ms": row[m]} for row in result.table() for m in ("median (ms)", "p90 (ms)")]
    )
    return pred_a.as_dict(), pred_b.as_dict(), verdict, table, chart


# -- Fine-tune --------------------------------------------------------------


def _curves(history) -> pd.DataFrame:
    rows = [{"step": e.step, "series": "train loss", "value": e.loss} for e in history if e.kind == "step"]
    rows += [{"step": e.step, "series": "train accuracy", "value": e.train_accuracy} for e in history if e.kind == "step"]
    rows += [{"step": e.step, "series": "validation accuracy", "value": e.val_accuracy} for e in history
             if e.kind == "epoch" and e.val_accuracy is not None]
    return pd.DataFrame(rows, columns=["step", "series", "value"])


def _confusion_figure(matrix, labels):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4 + 0.3 * len(labels), 3.5 + 0.3 * len(labels)))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=8)
    fig.tight_layout()
    return fig


CHOOSERS = 5  # Classify, Compare A and B, Fine-tune base, Push


def _choices_update():
    choices = registry.choices()
    return tuple(gr.Dropdown(choices=choices) for _ in range(CHOOSERS))


@gpu(duration=300)
def train(data_zip, use_mnist, base, epochs, lr, freeze, name, progress=gr.Progress()):
    data = "mnist-sample" if use_mnist else data_zip
    if not data:
        raise gr.Error("no data: upload a .zip with one folder per class, or tick 'bundled MNIST sample'",
                       print_exception=False)
    try:
        config = FinetuneConfig(base=base, epochs=int(epochs), lr=float(lr), freeze=int(freeze),
                                image_size=32 if use_mnist else 128)
        job = jobs.start(data, config, name or None)
    except (ResNetHubError, ValueError, TypeError) as e:
        raise _user_error(e) from None
    history = []
    status = f"Training on {job.dataset.summary()}"
    try:
        yield job.id, status, _curves(history), None, None, *_choices_update()
        for batch in jobs.stream(job):
            history += batch
            for event in batch:
                if event.kind == "step" and event.total_steps:
                    progress(event.step / event.total_steps,
                             desc=f"epoch {event.epoch + 1}/{event.epochs} · {event.images_per_s:.0f} img/s · ETA {event.eta_s:.0f} s")
                if event.message:
                    status = event.message
            if batch:
                yield job.id, status, _curves(history), None, None, *_choices_update()
    finally:
        # The visitor left (Gradio closed this generator): nobody can press Stop any more.
        if not job.done.is_set():
            jobs.stop(job.id)
    if job.error:
        raise gr.Error(job.error, print_exception=False)
    result = job.result
    if result.stopped:
        yield None, f"{result.reason}: nothing saved.", _curves(history), None, None, *_choices_update()
        return
    summary = (f"**Validation accuracy {result.val_accuracy:.2%}** on {len(result.confusion_matrix)} classes; "
               f"{result.images_per_s:.0f} images/s. Saved as `{job.folder.name}`: now in the Classify and Compare choosers.")
    notes = "".join(f"\n\n_{n}_" for n in result.model.info.notes)
    fig = _confusion_figure(result.confusion_matrix, result.model.labels)
    yield None, summary + notes, _curves(history), fig, str(zip_model_folder(job.folder)), *_choices_update()


def stop(job_id):
    if jobs.stop(job_id):
        gr.Info("Stopping at the next step; nothing will be saved.")
    else:
        gr.Warning("No run of yours is in progress.")


def push(model_choice, repo_id, token_text, oauth_token: gr.OAuthToken | None = None):
    token = (oauth_token.token if oauth_token is not None else None) or (token_text or "").strip() or None
    if not token:
        raise gr.Error("log in with Hugging Face (or paste a write token locally) before pushing", print_exception=False)
    try:
        if not model_choice or not model_choice.startswith("local:"):
            raise gr.Error("choose a model fine-tuned here to push", print_exception=False)
        model = load(model_folder(model_choice.removeprefix("local:")), device="cpu")
        url = model.push_to_hub((repo_id or "").strip(), token=token)
    except ResNetHubError as e:
        raise _user_error(e) from None
    return f"Pushed: {url}"


# -- About ------------------------------------------------------------------


def about_markdown() -> str:
    parts = [
        "### What a residual block is\n"
        "A residual block computes `y = relu(F(x) + x)`: its convolutions `F` learn only the *change* to "
        "their input, and the identity shortcut `+ x` lets signal and gradients pass straight through, "
        "which is what lets 50 or 152 layers train (He et al., 2015, arXiv:1512.03385). ResNet-18 and -34 use "
        "a *basic* block (two 3x3 convolutions); ResNet-50 and deeper a *bottleneck* (1x1 reduce, 3x3, 1x1 expand)."
    ]
    for arch in ("resnet18", "resnet50"):
        model = build(arch)
        n = weighted_layers(model)
        blocks = sum(len(getattr(model, s)) for s in ("layer1", "layer2", "layer3", "layer4"))
        per_block = 2 if model.config.block == "basic" else 3
        rows = stage_table(model)
        table = "| stage | output (C, H, W) at 224 px | residual blocks | weighted layers | parameters |\n|---|---|---|---|---|\n"
        table += "\n".join(f"| {r['stage']} | {r['output (C, H, W)']} | {r['residual blocks']} | {r['weighted layers']} | "
                           f"{r['parameters']:,} |" for r in rows)
        parts.append(
            f"### Why {arch.replace('resnet', 'ResNet-')} has {n} layers\n"
            f"1 stem convolution + {blocks} blocks x {per_block} convolutions + 1 fully connected layer "
            f"= **{n}** weighted layers (the 1x1 projection shortcuts are not counted). "
            f"{sum(r['parameters'] for r in rows):,} parameters in all.\n\n{table}"
        )
    return "\n\n".join(parts)


# -- Layout -----------------------------------------------------------------


def examples() -> list[list[str]]:
    from resnet_hub.examples import example_images

    return [[str(p)] for p in example_images()]


with gr.Blocks(title="resnet-hub", delete_cache=(3600, 3600)) as demo:
    gr.Markdown("# resnet-hub\nTry, compare and fine-tune ResNet-18 and ResNet-50.")
    gr.Markdown(registry.banner, elem_id="weights-banner")
    choices = registry.choices()

    with gr.Tab("Classify", id="classify"):
        with gr.Row():
            with gr.Column():
                image = uploaded_image(sources=["upload", "webcam", "clipboard"], label="Image")
                sketch = gr.Sketchpad(label="…or draw a digit", type="numpy", image_mode="RGB", canvas_size=(280, 280))
                model = gr.Dropdown(choices=choices, value="resnet50", allow_custom_value=True,
                                    label="Model (or type a Hub repo id: org/name)")
                top_k = gr.Slider(1, 10, value=5, step=1, label="Top-k")
                go = gr.Button("Classify", variant="primary")
            with gr.Column():
                labels = gr.Label(label="Top classes", elem_id="classify-label")
                timing = gr.Markdown()
                heatmap = gr.Image(label="Where the model looked (grad-CAM for the top class)", type="pil")
        gr.Examples(examples(), inputs=[image], label="Examples: real photos (scikit-image) and MNIST digits")
        go.click(classify, [image, sketch, model, top_k], [labels, timing, heatmap], api_name="classify",
                 concurrency_limit=CLASSIFY_CONCURRENCY, concurrency_id="inference")

    with gr.Tab("Compare", id="compare"):
        with gr.Row():
            with gr.Column():
                c_image = uploaded_image(sources=["upload", "webcam", "clipboard"], label="Image")
                c_sketch = gr.Sketchpad(label="…or draw a digit", type="numpy", image_mode="RGB", canvas_size=(280, 280))
                with gr.Row():
                    model_a = gr.Dropdown(choices=choices, value="resnet18", allow_custom_value=True, label="Model A")
                    model_b = gr.Dropdown(choices=choices, value="resnet50", allow_custom_value=True, label="Model B")
                c_go = gr.Button("Compare", variant="primary")
            with gr.Column():
                with gr.Row():
                    label_a = gr.Label(label="Model A", elem_id="compare-label-a")
                    label_b = gr.Label(label="Model B", elem_id="compare-label-b")
                verdict = gr.Markdown()
        timing_table = gr.Dataframe(label="Timings (warm median and p90 of 10 batch-1 runs after warm-up)")
        timing_chart = gr.BarPlot(x="model", y="ms", color="measure", title="Latency per image (ms)")
        gr.Examples(examples(), inputs=[c_image])
        c_go.click(compare, [c_image, c_sketch, model_a, model_b], [label_a, label_b, verdict, timing_table, timing_chart],
                   api_name="compare", concurrency_limit=CLASSIFY_CONCURRENCY, concurrency_id="inference")

    with gr.Tab("Fine-tune", id="finetune"):
        job_id = gr.State(None)
        with gr.Row():
            with gr.Column():
                data_zip = gr.File(label="A .zip with one folder per class", file_types=[".zip"], type="filepath")
                use_mnist = gr.Checkbox(label="Use the bundled MNIST sample instead (5,000 digits)", value=False)
                base = gr.Dropdown(choices=choices, value="resnet18", allow_custom_value=True, label="Start from")
                with gr.Row():
                    epochs = gr.Number(value=3, precision=0, minimum=1, maximum=50, label="Epochs")
                    lr = gr.Number(value=0.05, minimum=0, label="Learning rate")
                    freeze = gr.Slider(-1, 4, value=-1, step=1, label="Frozen stages (-1: none)")
                name = gr.Textbox(label="Name for the new model", placeholder="e.g. my-pets")
                with gr.Row():
                    start = gr.Button("Start", variant="primary")
                    stop_btn = gr.Button("Stop", variant="stop")
            with gr.Column():
                status = gr.Markdown(elem_id="finetune-status")
                curves = gr.LinePlot(x="step", y="value", color="series", title="Loss and accuracy", height=260)
                confusion = gr.Plot(label="Confusion matrix (validation)")
                download = gr.File(label="Download the weights (model.safetensors + config.json + README.md)")
        with gr.Accordion("Push to the Hugging Face Hub", open=False):
            if ON_SPACES:
                gr.LoginButton()
            push_model = gr.Dropdown(choices=choices, allow_custom_value=True, label="Model fine-tuned here")
            repo_id = gr.Textbox(label="Repo id (your-name/model-name)")
            token = gr.Textbox(label="Write token (local runs; never stored or logged)", type="password", visible=not ON_SPACES)
            push_btn = gr.Button("Push")
            push_result = gr.Markdown()
        start.click(train, [data_zip, use_mnist, base, epochs, lr, freeze, name],
                    [job_id, status, curves, confusion, download, model, model_a, model_b, base, push_model],
                    api_name="finetune", concurrency_limit=1, concurrency_id="finetune")
        stop_btn.click(stop, [job_id], None, api_name="stop_finetune", queue=False)
        push_btn.click(push, [push_model, repo_id, token], [push_result], api_name="push")

    with gr.Tab("About", id="about"):
        gr.Markdown(about_markdown())

demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CLASSIFY_CONCURRENCY)


def launch_options() -> dict:
    """What `python app.py` passes to launch(); the tests start the app with the same."""
    from resnet_hub.store import store_root

    return {"max_file_size": MAX_FILE_SIZE, "show_error": True, "allowed_paths": [str(store_root() / "examples")]}


if __name__ == "__main__":
    demo.launch(**launch_options())
