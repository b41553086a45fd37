"""resnet-hub: try, compare and fine-tune ResNets. The UI only: every button calls resnet_hub.

Run locally with `python app.py`; on a Hugging Face Space this file is the app.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import threading
import uuid
import warnings
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image

from resnet_hub.errors import ResNetHubError
from resnet_hub.finetune import FREEZE_ADVICE, FinetuneConfig
from resnet_hub.images import load_image
from resnet_hub.model import build, stage_table, weighted_layers
from resnet_hub.owners import Visitor, multi_user, new_browser_id, retention_hours
from resnet_hub.services.input_notes import NOTHING_TO_SEE, PHOTO_TO_DIGITS
from resnet_hub.services.jobs import IMAGE_SIZE, FinetuneJobs
from resnet_hub.services.publish import model_downloads, push_stored_model
from resnet_hub.services.registry import COMPARE_RUNS, ModelRegistry
from resnet_hub.store import remove_expired, store_root, stored_model
from resnet_hub.training_slot import TRAINING, lower_this_threads_priority

try:  # ZeroGPU Spaces: GPU work runs inside @spaces.GPU; elsewhere this is a no-op.
    import spaces

    gpu = spaces.GPU
except ImportError:

    def gpu(fn=None, **_):
        return fn if fn is not None else (lambda f: f)


ON_SPACES = os.environ.get("SYSTEM") == "spaces"
# Space mode (RESNET_HUB_MULTI_USER, defaulting from SYSTEM=spaces): each visitor's fine-tuned models are theirs.
MULTI_USER = multi_user()
# The Hugging Face login button needs a real Space's OAuth app; elsewhere Gradio would mock it with this
# machine's own saved token (and refuse to start without one).
LOGIN = gr.utils.get_space() is not None
RETENTION_HOURS = retention_hours()
SKETCH_MAX_PIXELS = 4096 * 4096  # the canvas is 280 px; a high-DPI screen sends a few times that, never this
SKETCH_MAX_BYTES = 8 * 2**20
# Gradio 6.31's plot components call pandas APIs that pandas 3 flags for removal, once per request.
warnings.filterwarnings("ignore", category=getattr(pd.errors, "Pandas4Warning", FutureWarning))
MAX_FILE_SIZE = "50mb"
QUEUE_SIZE = 64
CLASSIFY_CONCURRENCY = 16  # concurrent classify requests share forward passes (Predictor.forward_batched)
HEATMAP_MIN_SIDE = 224  # px, as shown

registry = ModelRegistry()
jobs = FinetuneJobs(registry, prepare_frozen_parts=True)
registry.start_building_starters()  # offline: train the starters now, so the first click rarely waits
# Then convert the default bases' frozen parts (default freeze and head only) at the size a photo zip trains at, so
# even the first fine-tune reads them.
jobs.prepare_bases(["resnet18", "resnet50"], IMAGE_SIZE["photo"])


def _user_error(e: Exception | str) -> gr.Error:
    # duration=None: the message stays until the visitor closes it (Gradio's default hides it after 10 s).
    return gr.Error(str(e), duration=None, print_exception=False)


def _starter_progress(progress: gr.Progress):
    def on_progress(build) -> None:
        progress(build.fraction, desc=f"{build.describe()} (first start of the app only)")

    return on_progress


def _with_input_note(info: str, note: str) -> str:
    """A photo sent to a digit model, or a blank image, is said first and loudly; other notes follow the timing."""
    if note.startswith((PHOTO_TO_DIGITS, NOTHING_TO_SEE)):
        gr.Warning(note, duration=12)  # the same words stay on the page, under the answer it would cover
        return f"**{note}.**\n\n{info}"
    return f"{info} · {note}" if note else info


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


def visitor_of(browser_id, request=None, profile=None, oauth_token=None) -> Visitor:
    """Who is asking: the local user, or a Space visitor (their login, else this browser, else this API session)."""
    if not MULTI_USER:
        return Visitor.local()
    return Visitor.on_space(browser_id=browser_id, hf_login=getattr(profile, "username", None),
                            token=getattr(oauth_token, "token", None), session=getattr(request, "session_hash", None))


def _browser_state_secret() -> str:
    """A secret kept in the store, so a browser's id survives restarts of the app (its models are on disk)."""
    path = store_root() / ".browser-state-secret"
    try:
        return path.read_text(encoding="ascii").strip()
    except OSError:
        secret = new_browser_id()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            staging = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
            staging.write_text(secret, encoding="ascii")
            os.replace(staging, path)
            return path.read_text(encoding="ascii").strip()
        except OSError:
            return secret


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
        raise _user_error(e) from None
    return {"background": None, "layers": [], "composite": np.asarray(picture)}


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
def classify(image, sketch, model_choice, top_k, browser_id=None, request: gr.Request = None,
             profile: gr.OAuthProfile | None = None, oauth_token: gr.OAuthToken | None = None,
             progress=gr.Progress()):
    try:
        result = registry.classify(_image_from(image, sketch), model_choice, int(top_k),
                                   on_progress=_starter_progress(progress),
                                   visitor=visitor_of(browser_id, request, profile, oauth_token))
    except ResNetHubError as e:
        raise _user_error(e) from None
    info = _with_input_note(f"**{result.model}** · {result.latency_ms:.1f} ms for this call", result.note)
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
    picture.save(buffer, format="WEBP", method=0)  # the fastest encoder setting: 224 px in ~2 ms, not ~11
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
def compare(image, sketch, model_a, model_b, browser_id=None, request: gr.Request = None,
            profile: gr.OAuthProfile | None = None, oauth_token: gr.OAuthToken | None = None,
            progress=gr.Progress()):
    try:
        result = registry.compare(_image_from(image, sketch), (model_a, model_b), on_progress=_starter_progress(progress),
                                  visitor=visitor_of(browser_id, request, profile, oauth_token))
    except ResNetHubError as e:
        raise _user_error(e) from None
    (name_a, pred_a), (name_b, pred_b) = list(result.predictions.items())[:2]
    verdict = (f"Top-1 **agrees**: both say *{pred_a.top1}*." if result.agree
               else f"Top-1 **differs**: *{pred_a.top1}* vs *{pred_b.top1}*.")
    for note in result.notes:
        verdict = _with_input_note(verdict, note)
    rows = result.table()
    # How each engine was chosen: the evidence, in words (too long for a table cell at 1280 px).
    verdict += "\n\n" + "\n".join(f"- **{r['model']}** runs on {r['why this engine']}" for r in rows)
    return pred_a.as_dict(), pred_b.as_dict(), verdict, timings_frame(rows), latency_frame(rows)


LATENCY_STATS = ("p10", "median", "p90")


def timings_frame(rows: list[dict]) -> pd.DataFrame:
    """One column per model, one row per measure: two models fit any screen, however many measures."""
    measures = [m for m in rows[0] if m not in ("model", "why this engine")]  # the evidence goes under the verdict
    return pd.DataFrame({"measure": measures, **{r["model"]: [_cell(r[m]) for m in measures] for r in rows}})


def _cell(value) -> str:
    return f"{value:,}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def latency_frame(rows: list[dict]) -> pd.DataFrame:
    """A bar per model and statistic, side by side (never stacked): each bar's height is its table value.

    Coloured by "model A" and "model B", not by the models' names (the table's columns and the verdict name them):
    Gradio 6.31's plot fixes its colours to the values of its first data, so a second pair's names got no colour
    and its bars were drawn without a fill. A new colour setting with the data does not help: the chart is redrawn
    for the setting before it has the new data."""
    return pd.DataFrame(
        [{"bar": f"{'AB'[i]} {stat}", "model": f"model {'AB'[i]}", "ms": float(row[f"{stat} (ms)"])}
         for i, row in enumerate(rows[:2]) for stat in LATENCY_STATS]
    )


# -- Fine-tune --------------------------------------------------------------


LOSS_SERIES = ("train loss",)
ACCURACY_SERIES = ("train accuracy", "validation accuracy")


def loss_curve(history) -> pd.DataFrame | None:
    """Training loss per step: its own plot, on its own scale (2.3 at the start beside accuracies of 0-1 hides both)."""
    rows = [(e.images, "train loss", e.loss) for e in history if e.kind == "step" and e.loss is not None]
    return _curve_frame(rows, "loss", LOSS_SERIES)


def accuracy_curves(history) -> pd.DataFrame | None:
    """Training accuracy per step and validation accuracy per epoch, on a 0-1 axis."""
    rows = [(e.images, "train accuracy", e.train_accuracy) for e in history
            if e.kind == "step" and e.train_accuracy is not None]
    # Before training (epoch 0), after each epoch, and where a stopped run was validated.
    rows += [(e.images, "validation accuracy", e.val_accuracy) for e in history
             if e.kind in ("epoch", "stopped") and e.val_accuracy is not None]
    return _curve_frame(rows, "accuracy", ACCURACY_SERIES)


def _curve_frame(rows, y: str, series: tuple[str, ...]) -> pd.DataFrame | None:
    """The rows as a typed frame that names every series from the first frame on.

    Gradio 6.31's LinePlot fixes its colour domain from the first frame it draws: a series that
    appears later (validation accuracy, after the first epoch) would get no stroke, and an empty
    first frame would leave every line without one. So: None until there is data, then first a
    placeholder row (y = NaN, which Vega does not draw) for every series, in ``series`` order: the
    colours follow the order in which series first appear, and a first frame that held only the
    validation before training gave validation the first colour in some runs and not others.
    A series with data gets no placeholder: Vega breaks a line at a NaN, and one placed between two of its
    points cut the validation line after its first point (one epoch: two dots, no line).
    """
    if not rows:
        return None
    start = min(x for x, _, _ in rows)
    by_series = {name: [row for row in rows if row[1] == name] or [(start, name, float("nan"))] for name in series}
    ordered = [row for name in series for row in by_series[name]] + [row for row in rows if row[1] not in by_series]
    # x: training images seen, a count whose ticks stay whole and few even for a run of four steps.
    # Typed: the plot reads each column's dtype, and an object column is drawn as categories.
    frame = pd.DataFrame(ordered, columns=["images", "series", y])
    return frame.astype({"images": "int64", "series": "str", y: "float64"})


def drawn_or_kept(frame: pd.DataFrame | None):
    """A curve to draw, or (none yet) the plot left as it is: Gradio 6.31's LinePlot set back to None unmounts its
    chart but keeps its ResizeObserver, which then throws "Cannot read properties of null (reading 'offsetWidth')"
    in the page. So a new run's curves replace the last run's at its first step."""
    return gr.skip() if frame is None else frame


def _progress_line(event) -> str:
    return (f"epoch {event.epoch + 1}/{event.epochs} · step {event.step}/{event.total_steps} "
            f"({event.step / event.total_steps:.0%}) · {event.images_per_s:.0f} images/s · about {event.eta_s:.0f} s left")


CONFUSION_CORNER = "true \\ predicted"
PER_CLASS_HEADERS = ["class", "precision", "recall", "F1", "support"]  # results.per_class's keys, as the table shows them
ANY_CLASS = "(any)"


def confusion_table(matrix, labels):
    """The confusion matrix as a table whose cells can be clicked: rows true classes, columns predicted.

    Shaded like a heat map (darker: more images), the diagonal (right answers) in blue, the rest in red.
    """
    frame = pd.DataFrame(matrix, columns=list(labels))
    frame.insert(0, CONFUSION_CORNER, list(labels))
    peak = max(1, max(max(row) for row in matrix))

    def shade(column):
        if column.name == CONFUSION_CORNER:
            return ["font-weight: bold"] * len(column)
        j = list(labels).index(column.name)
        colours = []
        for i, v in enumerate(column):
            alpha = 0.12 + 0.6 * v / peak if v else 0.0
            rgb = "37, 99, 235" if i == j else "220, 38, 38"
            colours.append(f"background-color: rgba({rgb}, {alpha:.2f})")
        return colours

    return frame.style.apply(shade)


def confusion_widths(labels) -> list[str]:
    """Column widths for the matrix: Gradio sizes a column to its header and menu button (57 px for a digit), so
    ten classes overflowed the results column and put the last one out of sight; long names wrap."""
    return ["96px"] + ["48px"] * len(labels)


def results_view(job_id, browser_id=None, request: gr.Request = None, profile: gr.OAuthProfile | None = None):
    """After a run: its per-class table, the class choosers and every misclassified image, most confident first."""
    review = jobs.review(job_id, visitor_of(browser_id, request, profile))
    if review is None:
        return None, gr.Dropdown(choices=[ANY_CLASS], value=ANY_CLASS), gr.Dropdown(choices=[ANY_CLASS], value=ANY_CLASS), \
            None, ""
    per_class = pd.DataFrame(review.results.per_class).rename(columns={"f1": "F1"})[PER_CLASS_HEADERS]
    for score in ("precision", "recall", "F1"):  # one format down each column ("1", "0.99" and "0.9899" mixed)
        per_class[score] = per_class[score].map("{:.2f}".format)
    choices = [ANY_CLASS, *review.results.classes]
    images, caption = _mistakes(review, None, None)
    return per_class, gr.Dropdown(choices=choices, value=ANY_CLASS), gr.Dropdown(choices=choices, value=ANY_CLASS), \
        images, caption


def _mistakes(review, true, predicted):
    true = None if true in (None, ANY_CLASS) else true
    predicted = None if predicted in (None, ANY_CLASS) else predicted
    shown = review.mistakes(true, predicted)
    what = f"{true or 'any class'} seen as {predicted or 'another class'}"
    if true is not None and true == predicted:
        return [], f"**{true} seen as {true}** are the right answers: pick a cell off the diagonal"
    total = len(review.results.mistakes(true, predicted))
    more = f" (the {len(shown)} most confident shown)" if len(shown) < total else ""
    return shown, (f"**{total} misclassified validation image{'s' * (total != 1)}: {what}**{more}, most confident "
                   f"first" if total else "**Every validation image was classified correctly.**"
                   if true is None and predicted is None else f"**No validation image of {what}.**")


def mistakes_for(job_id, true, predicted, browser_id=None, request: gr.Request = None,
                 profile: gr.OAuthProfile | None = None):
    """The misclassified validation images of one true/predicted pair (a confusion-matrix cell)."""
    review = jobs.review(job_id, visitor_of(browser_id, request, profile))
    if review is None:
        raise _user_error("no finished run of yours to look at: fine-tune a model first")
    return _mistakes(review, true, predicted)


def confusion_cell(job_id, browser_id=None, evt: gr.SelectData = None, request: gr.Request = None,
                   profile: gr.OAuthProfile | None = None):
    """A click on a confusion-matrix cell: choose its true and predicted classes and show those images."""
    review = jobs.review(job_id, visitor_of(browser_id, request, profile))
    if review is None or evt is None or not isinstance(evt.index, (list, tuple)) or evt.index[1] == 0:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    row, column = evt.index
    classes = review.results.classes
    true, predicted = classes[row], classes[column - 1]
    images, caption = _mistakes(review, true, predicted)
    return true, predicted, images, caption


CHOOSERS = 5  # Classify, Compare A and B, Fine-tune base, Push
FREEZE_AUTO = "auto"
# "auto" is explained in the note under the controls: a longer label was cut at "auto (3 for a pretrained b" in the
# box, and read as 3 for every run (digits and runs from scratch train every stage).
FREEZE_CHOICES = [("auto (see below)", FREEZE_AUTO), ("-1: none, train all", -1),
                  ("0: the stem", 0), *((f"{n}: stem + layer1..{n}" if n > 1 else "1: stem + layer1", n) for n in (1, 2, 3)),
                  ("4: all but the head", 4)]


def _choices_update(visitor: Visitor):
    """Every chooser lists the models ``visitor`` may use as the store is now: on each page load and after each run."""
    choices = registry.choices(visitor)
    return tuple(gr.Dropdown(choices=choices) for _ in range(CHOOSERS))


def on_page_load(stored_id, request: gr.Request = None, profile: gr.OAuthProfile | None = None):
    """Banner and choosers for this visitor; in Space mode, this browser's id (made on its first visit)."""
    browser_id = stored_id if isinstance(stored_id, str) and Visitor.on_space(browser_id=stored_id).owners[0] \
        .startswith("browser-") else new_browser_id()
    if MULTI_USER:
        remove_expired(RETENTION_HOURS * 3600)
    visitor = visitor_of(browser_id, request, profile)
    return (registry.banner, gr.Timer(active=registry.starters.building), browser_id, browser_id,
            *_choices_update(visitor))


def on_banner_tick():
    return registry.banner, gr.Timer(active=registry.starters.building)


def _running() -> gr.Button:
    return gr.Button("Training… (Stop ends the run)", interactive=False)


def _idle() -> gr.Button:
    return gr.Button("Start", interactive=True)


def _queue_line(job) -> str:
    ahead = jobs.position(job)
    return (f"**Waiting in line: {ahead} training{'s' * (ahead != 1)} ahead of yours** (one trains at a time on "
            f"this machine, fine-tunes and the lab's live runs alike). It starts by itself; Stop leaves the line.")


@gpu(duration=300)
def train(data_zip, use_mnist, base, epochs, lr, freeze, name, seed=0, browser_id=None, request: gr.Request = None,
          profile: gr.OAuthProfile | None = None, oauth_token: gr.OAuthToken | None = None):
    """Stream a run's state into the page: the status line carries the progress, so no overlay hides results."""
    visitor = visitor_of(browser_id, request, profile, oauth_token)
    data = "mnist-sample" if use_mnist else data_zip
    if not data:
        raise _user_error("no data: upload a .zip with one folder per class, or tick 'bundled MNIST sample'")
    while (build := registry.pending_starter(base)) is not None and not build.done.wait(1.0):
        yield None, f"Waiting for the {build.describe()}.", gr.skip(), gr.skip(), gr.skip(), gr.skip(), _running(), \
            *_choices_update(visitor)
    try:
        config = FinetuneConfig(base=base, epochs=int(epochs), lr=float(lr),
                                freeze=None if freeze in (None, FREEZE_AUTO) else int(freeze),
                                seed=int(seed) if seed is not None else 0)  # image size: by the data (IMAGE_SIZE)
        job = jobs.start(data, config, name or None, visitor=visitor)
    except (ResNetHubError, ValueError, TypeError) as e:
        raise _user_error(e) from None
    history = []
    summary = f"Training on {job.dataset.summary()}. Will be saved as `{job.folder.name}`."
    status = summary
    try:
        waiting = jobs.position(job) > 0
        status = f"{summary}\n\n{_queue_line(job)}" if waiting else summary
        yield job.id, status, drawn_or_kept(loss_curve(history)), drawn_or_kept(accuracy_curves(history)), None, None, \
            _running(), *_choices_update(visitor)
        for batch in jobs.stream(job):
            if waiting and not batch:
                waiting = jobs.position(job) > 0
                if waiting:
                    yield job.id, f"{summary}\n\n{_queue_line(job)}", gr.skip(), gr.skip(), gr.skip(), gr.skip(), \
                        _running(), *[gr.skip()] * CHOOSERS
                continue
            waiting = False
            history += batch
            steps = [e for e in batch if e.kind == "step" and e.total_steps]
            messages = [e.message for e in batch if e.message]
            if steps or messages:
                status = summary + "\n\n" + (f"**{_progress_line(steps[-1])}**" if steps else "")
                status += "".join(f"\n\n{m}" for m in messages[-1:])
                yield job.id, status, drawn_or_kept(loss_curve(history)), drawn_or_kept(accuracy_curves(history)), \
                    gr.skip(), gr.skip(), _running(), *[gr.skip()] * CHOOSERS
    finally:
        # The visitor left (Gradio closed this generator): nobody can press Stop any more.
        if not job.done.is_set():
            jobs.stop(job.id)
    if job.error:
        raise _user_error(job.error)
    result = job.result
    if result is None:  # stopped while waiting in line
        yield None, "**Stopped before its turn came: nothing trained, nothing saved.**", None, None, None, None, \
            _idle(), *_choices_update(visitor)
        return
    if result.model is None:  # cancelled, or stopped before it learned anything
        yield None, f"**{result.reason}: nothing saved.**", drawn_or_kept(loss_curve(history)), \
            drawn_or_kept(accuracy_curves(history)), None, None, \
            _idle(), *_choices_update(visitor)
        return
    stopped = (f"**{result.reason.capitalize()} at epoch {result.stopped_at['epoch']}, step {result.stopped_at['step']} "
               f"of {result.stopped_at['total_steps']}: kept what it had learned.** ") if result.stopped_at else ""
    summary = (f"{stopped}**Validation accuracy {result.val_accuracy:.2%}**{_against_the_start(history, result)} on "
               f"{len(result.confusion_matrix)} classes; {result.images_per_s:.0f} images/s. Saved as "
               f"`{job.folder.name}`: now in the Classify and Compare choosers.")
    notes = "".join(f"\n\n_{n}_" for n in result.model.info.notes)
    table = gr.Dataframe(confusion_table(result.confusion_matrix, result.model.labels),
                         column_widths=confusion_widths(result.model.labels))
    files, export_note = model_downloads(job.folder)
    # job.id stays in the page's state: the results view below reads this run's mistakes by it.
    yield job.id, summary + notes + f"\n\n_{export_note}_", loss_curve(history), accuracy_curves(history), table, \
        [str(f) for f in files], _idle(), *_choices_update(visitor)


def _against_the_start(history, result) -> str:
    """The validation accuracy the run started from, and a warning when it ends below it (a trained model continued
    at a learning rate made for a new head can lose what it knew)."""
    before = next((e.val_accuracy for e in history if e.kind == "epoch" and e.epoch == 0 and e.val_accuracy is not None),
                  None)
    if before is None:
        return ""
    if result.val_accuracy < before:
        return (f" (**lower than the {before:.2%} it started from**: a trained model usually needs a smaller "
                f"learning rate to improve, or fewer epochs)")
    return f" (from {before:.2%} before training)"


def stop(job_id):
    if jobs.stop(job_id):
        gr.Info("Stopping at the next step: what it has learned is validated and saved, marked as stopped.")
    else:
        gr.Warning("No run of yours is in progress.")


def cancel(job_id):
    if jobs.cancel(job_id):
        gr.Info("Cancelling at the next step: nothing will be saved.")
    else:
        gr.Warning("No run of yours is in progress.")


def push(model_choice, repo_id, token_text, include_data_names=False, browser_id=None, request: gr.Request = None,
         profile: gr.OAuthProfile | None = None, oauth_token: gr.OAuthToken | None = None):
    visitor = visitor_of(browser_id, request, profile, oauth_token)
    # A Space visitor pushes with their own login only; the pasted token is for a local run of the app.
    pasted = None if MULTI_USER else (token_text or "").strip()
    token = (oauth_token.token if oauth_token is not None else None) or pasted or None
    if not model_choice or not model_choice.startswith("local:"):
        raise _user_error("choose a model fine-tuned here to push")
    folder = stored_model(model_choice.removeprefix("local:"), visitor)
    if folder is None:
        raise _user_error(f"{model_choice.removeprefix('local:')} is not one of your models: pick one from the list")
    if not token:
        raise _user_error("log in with Hugging Face (or paste a write token locally) before pushing")
    try:
        url = push_stored_model(folder, (repo_id or "").strip(), token, include_data_names=bool(include_data_names))
    except ResNetHubError as e:
        raise _user_error(e) from None
    return f"Pushed: {url}"


# -- Why residual? ----------------------------------------------------------

LAB_TEXT = {
    "degradation": (
        "**The degradation problem.** Plain and residual nets of two depths, trained with one recipe on the bundled "
        "MNIST sample. *Look for:* the deeper **plain** net ends with the **higher** training error (so it is not "
        "over-fitting: it fits its own training digits worse), while the deeper **residual** net ends no worse "
        "than the shallower one. Curves: the running training error, per net, mean over the seeds."),
    "gradients": (
        "**Gradients at initialisation.** One real batch through each net of the deepest depth measured, untrained. "
        "Each line is the size of the gradient that reaches a block's output, from the input (left) to the output "
        "(right), on a log scale. *Look for:* with the naive initialisation (every weight from N(0, 0.01²)) and no "
        "BatchNorm, the plain net's gradient **vanishes**: it underflows to exactly 0 before it reaches the input "
        "(drawn at the floor of the chart: 'floored'). Kaiming's initialisation keeps it within about an order of magnitude. "
        "BatchNorm makes the initialisation irrelevant (its two lines are one: 'any init'), but through a deep **plain** net its "
        "gradient **grows** towards the input by orders of magnitude (Yang et al. 2019, arXiv:1902.08129); with "
        "shortcuts it grows far less. Without BatchNorm, Kaiming's initialisation makes a **residual** net's signal "
        "grow with every block (each shortcut adds its branch's variance) until it explodes: why ResNets keep "
        "BatchNorm, or start each branch at zero."),
    "plain-vs-resnet": (
        "**A plain CNN against a ResNet** on the same digits and recipe, the comparison of the MNIST lesson. "
        "*Look for:* which reaches the higher validation accuracy, with how many parameters."),
}
LAB_LIVE = None  # None: resnet_hub.lab.LIVE_SETTINGS (the tests shorten it)
LAB_FIRST = "gradients"  # the live experiment chosen when the page opens: seconds long


def _lab_series(experiment: str, settings) -> tuple[str, ...]:
    if experiment == "degradation":
        return tuple(f"{f}-{d}" for d in sorted(settings.depths) for f in ("plain", "resnet"))
    return ("cnn", f"resnet-{settings.resnet_depth}")


def lab_training_curves(result) -> pd.DataFrame | None:
    """Running training error per logged step, averaged over the seeds of each net."""
    by_point: dict[tuple[str, int], list[float]] = {}
    for run in result.runs:
        for step, error in zip(run.steps, run.step_error):
            if error is not None:
                by_point.setdefault((run.net, step), []).append(error)
    rows = [(step, net, sum(v) / len(v)) for (net, step), v in sorted(by_point.items(), key=lambda kv: kv[0][1])]
    frame = _curve_frame(rows, "training error", _lab_series(result.experiment, result.settings))
    return None if frame is None else frame.rename(columns={"images": "step", "series": "net"})


GRADIENT_FLOOR = 1e-8  # smaller gradients (0 included: a vanished one underflows) are drawn here, and labelled so
SAME_LINE = 0.1  # log10 units (2 px on the chart): two initialisations this close at every block are one line


def lab_gradient_curves(result) -> pd.DataFrame | None:
    """log10 of the gradient reaching each block's output, for every variant at the deepest depth measured.

    A gradient under ``GRADIENT_FLOOR`` is drawn at it, "floored" in its label (a line of one point, or none, would
    not be drawn at all), and where BatchNorm makes the two initialisations give the same line it is drawn once.
    """
    import math

    deepest = max(n.depth for n in result.nets) if result.nets else None
    lines: dict[tuple[str, bool], dict[str, list[float]]] = {}
    for n in result.nets:
        if n.depth == deepest:
            lines.setdefault((n.net, n.batchnorm), {})[n.init] = [
                math.log10(max(v, GRADIENT_FLOOR)) if v is not None else math.nan for v in n.signal_norms]
    rows = []
    for (net, batchnorm), by_init in lines.items():
        series = list(by_init.items())
        if len(series) == 2 and all(abs(a - b) <= SAME_LINE for a, b in zip(series[0][1], series[1][1])):
            series = [("any init", series[0][1])]
        for init, values in series:
            # Short, without the depth (the deepest, which the text and the table give): the legend is one row, and
            # at 1400 px it cut off the labels of the last two of seven lines, the exploding one among them.
            label = f"{net.rsplit('-', 1)[0]}{' + BN' if batchnorm else ''}, {init}"
            if any(v <= math.log10(GRADIENT_FLOOR) for v in values):
                label += " (floored)"
            rows += [(i, label, v) for i, v in enumerate(values)]
    if not rows:
        return None
    frame = pd.DataFrame(rows, columns=["block", "variant", "log10 gradient"])
    return frame.astype({"block": "int64", "variant": "str", "log10 gradient": "float64"})


def lab_result(experiment: str):
    """(result, shipped): this machine's last completed full run, else the project's own, shipped with the package
    (so a fresh install, a new Space, has the lesson to show), else (None, False)."""
    from resnet_hub.lab import load_cached, load_shipped

    own = load_cached(experiment)
    if own is not None:
        return own, False
    shipped = load_shipped(experiment)
    return shipped, shipped is not None


def _lab_caption(experiment: str, result, shipped: bool = False) -> str:
    """What was measured (when, where, how) and its numbers: shown under the picture, full width."""
    if result is None:
        return (f"_No completed run is kept yet: run `python -m resnet_hub why-residual {experiment}` "
                f"(the full version), or a short one live below._")
    env = result.environment
    measured = (f"Measured {env.get('date', '?')} on {env.get('cpu', env.get('device', '?'))}, "
                f"torch {env.get('torch', '?')}, {result.seconds:.0f} s.")
    if shipped:
        measured = (f"Measured by the project (shipped with the app; `python -m resnet_hub why-residual {experiment}` "
                    f"measures it on this machine): {env.get('date', '?')}, "
                    f"{env.get('cpu', env.get('device', '?'))}, torch {env.get('torch', '?')}, {result.seconds:.0f} s.")
    if result.experiment == "gradients":
        table = "| net | BN | init | gradient, stem / last block | forward pass |\n|---|---|---|---|---|\n" + "\n".join(
            f"| {r['net']} | {r['batchnorm']} | {r['init']} | {_sci(r['signal first/last'])} | {r['forward']} |"
            for r in result.table())
        return f"{measured}\n\n{table}"
    rows = "\n".join(f"| {r['net']} | {r['layers']} | {r['parameters']:,} | {_pct(r['train error (mean)'])} "
                     f"({_pct(r['train error (min)'])}-{_pct(r['train error (max)'])}) | {_pct(r['val accuracy (mean)'])} |"
                     for r in result.summary())
    table = ("| net | layers | parameters | final training error, mean (range over seeds) | validation accuracy |\n"
             "|---|---|---|---|---|\n" + rows)
    verdicts = "".join(f"\n- {'**holds**' if o['holds'] else '**does not hold**'}: {o['claim']}" for o in result.orderings())
    recipe = result.settings.recipe
    how = (f"Recipe for every net: SGD momentum {recipe.momentum}, lr {recipe.warmup_lr} for {recipe.warmup_epochs} "
           f"epoch then {recipe.lr} with cosine decay, batch {recipe.batch_size}, {recipe.epochs} epochs; width "
           f"{result.settings.width}; seeds {', '.join(map(str, result.settings.seeds))}.")
    return f"{measured} {how}\n\n{table}\n{verdicts}"


def _pct(v) -> str:
    return "-" if v is None else f"{v:.2%}"


def _sci(v) -> str:
    return "-" if v is None else f"{v:.1e}"


def lab_cached():
    """The last completed result of each experiment, as pictures and text: read on every page load."""
    out = []
    for experiment in ("degradation", "gradients", "plain-vs-resnet"):
        result, shipped = lab_result(experiment)
        curves = lab_gradient_curves if experiment == "gradients" else lab_training_curves
        out += [curves(result) if result else None, _lab_caption(experiment, result, shipped)]

    return tuple(out)


def lab_live(experiment):
    """Run the short version of one experiment, streaming its curves; Stop keeps them on the page, caches nothing."""
    import queue

    from resnet_hub.lab import LIVE_SETTINGS, run_experiment

    settings = (LAB_LIVE or LIVE_SETTINGS)[experiment]
    events: queue.Queue = queue.Queue()
    LAB_STOP.clear()
    outcome: dict = {}

    ticket = TRAINING.enter(f"the lab's {experiment} run")

    def work():
        try:
            if not TRAINING.wait_turn(ticket, stop=LAB_STOP):
                outcome["waited"] = True
                return
            lower_this_threads_priority()  # requests first, as for a fine-tune
            outcome["result"] = run_experiment(experiment, settings, on_event=events.put, stop=LAB_STOP, cache=False)
        except Exception as e:  # noqa: BLE001 - the visitor hears of any failure; the app keeps serving
            outcome["error"] = e
        finally:
            TRAINING.leave(ticket)
            events.put(None)

    threading.Thread(target=work, name="lab-live", daemon=True).start()
    status, last = f"Running the short {experiment} experiment…", None
    try:
        while (ahead := TRAINING.position(ticket)) > 0:  # one training at a time: a fine-tune may hold the slot
            yield gr.skip(), (f"**Waiting in line: {ahead} training{'s' * (ahead != 1)} ahead** (one trains at a "
                              f"time on this machine). It starts by itself; Stop leaves the line.")
            ticket.left.wait(1.0)
        while (event := events.get()) is not None:
            last = event
            if event.kind in ("step", "epoch", "net", "start") and events.qsize() < 2:
                status = f"**{event.progress:.0%}** · {event.message}"
                yield _lab_live_picture(experiment, event.result), status
    except GeneratorExit:  # the visitor left (Gradio closed this generator): no one watches, so the run stops
        LAB_STOP.set()  # and frees the one training slot (it held the next visitor in line for the rest of it)
        raise
    if outcome.get("waited"):
        yield gr.skip(), "**Stopped before its turn came**: nothing ran."
        return
    if "error" in outcome:
        raise _user_error(outcome["error"])
    result = outcome["result"]
    if result.stopped:
        status = f"**Stopped** at {last.progress:.0%}: the curves so far stay here; nothing is kept."
    else:
        status = _lab_done(experiment, result)
    yield _lab_live_picture(experiment, result), status


def _lab_done(experiment, result) -> str:
    """What a finished live run says: its verdicts, and that the full version's are the ones to read."""
    from resnet_hub.lab import CACHED_SETTINGS

    what, full_what = _lab_scope(result.settings), _lab_scope(CACHED_SETTINGS[experiment])
    where = ("its result is above" if lab_result(experiment)[0] is not None else
             f"`python -m resnet_hub why-residual {experiment}` runs it on this machine")
    status = f"**Done** in {result.seconds:.0f} s: the short version ({what})."
    verdicts = result.orderings() if experiment == "degradation" else []
    if verdicts:
        status += " On one short run the verdicts are a preview:" + "".join(
            f"\n- {'**holds**' if o['holds'] else '**does not hold**'}: {o['claim']}" for o in verdicts)
        status += f"\n\nThe full version ({full_what}) judges them over its seeds: {where}."
    else:
        status += f" The full version ({full_what}): {where}."
    return status


def _lab_scope(settings) -> str:
    recipe = getattr(settings, "recipe", None)
    if recipe is None:  # the gradients: one batch through nets of these depths
        return f"depths {', '.join(map(str, sorted(settings.depths)))}"
    seeds = len(settings.seeds)
    return f"{recipe.epochs} epochs, {seeds} seed{'s' * (seeds != 1)}"


def _lab_live_picture(experiment, result):
    if experiment == "gradients":  # seconds long; its variants are drawn together at the end (one colour domain)
        return lab_gradient_curves(result) if result.stopped or len(result.nets) == _gradient_variants(result) \
            else gr.skip()
    return lab_training_curves(result)


def _gradient_variants(result) -> int:
    return len(result.settings.depths) * 2 * 2 * 2  # plain/residual x BatchNorm or not x naive/Kaiming init


LAB_STOP = threading.Event()  # one live lab run at a time (its event's concurrency_limit=1): one Stop


def lab_stop():
    LAB_STOP.set()
    gr.Info("Stopping at the next step; the curves so far stay, nothing is kept.")


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
            f"{sum(r['parameters'] for r in rows):,} parameters in all with ImageNet's 1000-class head (a 10-class "
            f"digit model's head is smaller: Compare counts the models it runs).\n\n{table}"
        )
    return "\n\n".join(parts)


# -- Layout -----------------------------------------------------------------


def examples(kind: str) -> list[list[str]]:
    """The bundled example files of one kind: "digits" or "photo"."""
    from resnet_hub.examples import example_images

    return [[str(p)] for p in example_images() if (p.name.startswith("mnist-digit")) == (kind == "digits")]


def add_examples(target) -> None:
    """Examples the models being served can answer first; offline, the photos are labelled for what they are."""
    gr.Examples(examples("digits"), inputs=[target], label="Examples: real MNIST digits")
    if registry.uses_starters:
        gr.Examples(examples("photo"), inputs=[target],
                    label="Photos (scikit-image): the offline starter models know only digits, so their answer "
                          "for a photo means nothing")
    else:
        gr.Examples(examples("photo"), inputs=[target], label="Examples: real photos (scikit-image)")


with gr.Blocks(title="resnet-hub", delete_cache=(3600, 3600)) as demo:
    gr.Markdown("# resnet-hub\nTry, compare and fine-tune ResNet-18 and ResNet-50.")
    banner = gr.Markdown(registry.banner, elem_id="weights-banner")
    banner_timer = gr.Timer(2.0, active=registry.starters.building)
    choices = registry.choices(Visitor.on_space() if MULTI_USER else Visitor.local())  # refilled per visitor on load
    # Space mode: the browser keeps a random id (localStorage) that owns its models; each event reads it
    # from this session's state, filled on page load (State, unlike BrowserState, is no API parameter).
    browser_state = gr.BrowserState(None, storage_key="resnet-hub-visitor", secret=_browser_state_secret())
    visitor_state = gr.State(None)

    with gr.Tab("Classify", id="classify"):
        with gr.Row():
            with gr.Column():
                image = uploaded_image(sources=["upload", "webcam", "clipboard"], label="Image", elem_id="classify-image")
                sketch = checked_sketchpad(label="…or draw a digit", canvas_size=(280, 280))
                model = gr.Dropdown(choices=choices, value="resnet50", allow_custom_value=True,
                                    label="Model (or type a Hub repo id: org/name)", elem_id="classify-model")
                top_k = gr.Slider(1, 10, value=5, step=1, label="Top-k")
                go = gr.Button("Classify", variant="primary")
            with gr.Column():
                labels = gr.Label(label="Top classes", elem_id="classify-label")
                timing = gr.Markdown(elem_id="classify-info")
                heatmap = gr.Image(label="Where the model looked (grad-CAM for the top class)", type="pil")
        add_examples(image)
        go.click(classify, [image, sketch, model, top_k, visitor_state], [labels, timing, heatmap], api_name="classify",
                 concurrency_limit=CLASSIFY_CONCURRENCY, concurrency_id="inference")

    with gr.Tab("Compare", id="compare"):
        with gr.Row():
            with gr.Column():
                c_image = uploaded_image(sources=["upload", "webcam", "clipboard"], label="Image")
                c_sketch = checked_sketchpad(label="…or draw a digit", canvas_size=(280, 280))
                with gr.Row():
                    model_a = gr.Dropdown(choices=choices, value="resnet18", allow_custom_value=True, label="Model A",
                                          elem_id="compare-model-a")
                    model_b = gr.Dropdown(choices=choices, value="resnet50", allow_custom_value=True, label="Model B",
                                          elem_id="compare-model-b")
                c_go = gr.Button("Compare", variant="primary")
            with gr.Column():
                with gr.Row():
                    label_a = gr.Label(label="Model A", elem_id="compare-label-a")
                    label_b = gr.Label(label="Model B", elem_id="compare-label-b")
                verdict = gr.Markdown(elem_id="compare-verdict")
        timing_table = gr.Dataframe(
            label=f"Timings: batch-1 forward passes of this image, {COMPARE_RUNS} runs per model taken in turn "
                  f"(A, B, A, B ...) after 3 warm-up runs each; 'first call after load' is the cold first pass "
                  f"after the model was loaded into this server",
            headers=["measure", "model A", "model B"], elem_id="compare-timings", wrap=True)
        timing_chart = gr.BarPlot(
            x="bar", y="ms", color="model", sort=[f"{m} {s}" for m in "AB" for s in LATENCY_STATS],
            title=f"Latency per image (ms): p10, median and p90 of {COMPARE_RUNS} runs", x_title="model A / B, statistic",
            y_title="ms", elem_id="compare-chart", height=300)
        add_examples(c_image)
        c_go.click(compare, [c_image, c_sketch, model_a, model_b, visitor_state],
                   [label_a, label_b, verdict, timing_table, timing_chart],
                   api_name="compare", concurrency_limit=CLASSIFY_CONCURRENCY, concurrency_id="inference")

    with gr.Tab("Fine-tune", id="finetune"):
        job_id = gr.State(None)
        if MULTI_USER:
            gr.Markdown(f"**Your models are yours.** On this Space, a model you fine-tune is listed, used, downloaded "
                        f"and pushed only from this browser (or under your Hugging Face login), and it is **deleted "
                        f"{RETENTION_HOURS:g} hours after it was trained**: download it or push it to the Hub to keep "
                        f"it. One training runs at a time on this machine; yours waits its turn in line.",
                        elem_id="finetune-ownership")
        with gr.Row():
            with gr.Column():
                data_zip = gr.File(label="A .zip with one folder per class", file_types=[".zip"], type="filepath",
                                   elem_id="finetune-zip")
                use_mnist = gr.Checkbox(label="Use the bundled MNIST sample instead (5,000 digits)", value=False)
                base = gr.Dropdown(choices=choices, value="resnet18", allow_custom_value=True, label="Start from",
                                   info="a model fine-tuned here continues its training: on the same classes it "
                                        "keeps its head, on new ones the head is replaced (the run says which)",
                                   elem_id="finetune-base")
                with gr.Row():
                    epochs = gr.Number(value=3, precision=0, minimum=1, maximum=50, label="Epochs",
                                       elem_id="finetune-epochs")
                    lr = gr.Number(value=0.05, minimum=0, label="Learning rate")
                    freeze = gr.Dropdown(FREEZE_CHOICES, value=FREEZE_AUTO, label="Frozen stages",
                                         elem_id="finetune-freeze")
                    seed = gr.Number(value=0, precision=0, label="Seed", info="split, order and initialisation",
                                     elem_id="finetune-seed")
                gr.Markdown(f"_Frozen stages, auto: {FREEZE_ADVICE}. From scratch or on digits every stage trains. "
                            f"Frozen stages run once per image (a cache of their features), so the rest trains "
                            f"in seconds._", elem_id="finetune-freeze-advice")
                name = gr.Textbox(label="Name for the new model (empty: named after the data, never replacing one)",
                                  placeholder="e.g. my-pets", elem_id="finetune-name")
                with gr.Row():
                    start = gr.Button("Start", variant="primary", elem_id="finetune-start")
                    stop_btn = gr.Button("Stop (keep what it learned)", variant="stop", elem_id="finetune-stop")
                    cancel_btn = gr.Button("Cancel (keep nothing)", elem_id="finetune-cancel")
            with gr.Column():
                status = gr.Markdown(elem_id="finetune-status")
                loss_plot = gr.LinePlot(None, x="images", y="loss", color="series", title="Training loss",
                                        x_title="training images seen", y_title="loss", height=220, elem_id="loss-plot")
                accuracy_plot = gr.LinePlot(None, x="images", y="accuracy", color="series",
                                            title="Accuracy", x_title="training images seen", y_title="accuracy", y_lim=[0, 1],
                                            height=220, elem_id="accuracy-plot")
                confusion = gr.Dataframe(label="Confusion matrix (validation; rows: true class, columns: predicted). "
                                               "Click a cell to see its images.", interactive=False,
                                         headers=[CONFUSION_CORNER], wrap=True, elem_id="finetune-confusion")
                per_class = gr.Dataframe(label="Per class (validation): precision, recall, F1, support",
                                         interactive=False, headers=PER_CLASS_HEADERS, elem_id="finetune-per-class")
                with gr.Row():
                    true_class = gr.Dropdown([ANY_CLASS], value=ANY_CLASS, label="True class",
                                             elem_id="finetune-true-class")
                    predicted_class = gr.Dropdown([ANY_CLASS], value=ANY_CLASS, label="Predicted as",
                                                  elem_id="finetune-predicted-class")
                mistakes_caption = gr.Markdown(elem_id="finetune-mistakes-caption")
                mistakes = gr.Gallery(label="Misclassified validation images, most confident first", columns=4,
                                      height="auto", preview=False, object_fit="scale-down",
                                      elem_id="finetune-mistakes")
                download = gr.File(label="Download: the weights (a zip of model.safetensors + config.json + "
                                         "README.md) and model.onnx (opset 17, checked against PyTorch)",
                                   file_count="multiple", elem_id="finetune-download")
        with gr.Accordion("Push to the Hugging Face Hub", open=False):
            if LOGIN:
                gr.LoginButton()
            push_model = gr.Dropdown(choices=choices, allow_custom_value=True, label="Model fine-tuned here",
                                     elem_id="push-model")
            repo_id = gr.Textbox(label="Repo id (your-name/model-name)")
            token = gr.Textbox(label="Write token (local runs; never stored or logged)", type="password",
                               visible=not MULTI_USER)
            include_data_names = gr.Checkbox(
                False, label="Name my data in the card (its file name and the names of misclassified images); "
                             "otherwise the card gives only counts, settings and scores", elem_id="push-data-names")
            push_btn = gr.Button("Push")
            push_result = gr.Markdown()
        # The status line carries the run's progress ("minimal": no overlay over the plots, the results
        # or the inputs); the Start button says a run is going and comes back when it ends, however it ends.
        start.click(train, [data_zip, use_mnist, base, epochs, lr, freeze, name, seed, visitor_state],
                    [job_id, status, loss_plot, accuracy_plot, confusion, download, start, model, model_a, model_b,
                     base, push_model],
                    # Several may be in the handler: one trains (resnet_hub.training_slot), the others show their
                    # place in line, which a run held in Gradio's own queue could not.
                    api_name="finetune", concurrency_limit=4, concurrency_id="finetune", show_progress="minimal",
                    ).then(lambda: _idle(), None, start, api_name=False, queue=False
                    ).then(results_view, [job_id, visitor_state],
                           [per_class, true_class, predicted_class, mistakes, mistakes_caption], api_name=False)
        stop_btn.click(stop, [job_id], None, api_name="stop_finetune", queue=False)
        cancel_btn.click(cancel, [job_id], None, api_name="cancel_finetune", queue=False)
        confusion.select(confusion_cell, [job_id, visitor_state], [true_class, predicted_class, mistakes, mistakes_caption],
                         api_name=False)
        gr.on([true_class.input, predicted_class.input], mistakes_for, [job_id, true_class, predicted_class, visitor_state],
              [mistakes, mistakes_caption], api_name="finetune_mistakes")
        push_btn.click(push, [push_model, repo_id, token, include_data_names, visitor_state], [push_result],
                       api_name="push")

    with gr.Tab("Why residual?", id="why-residual"):
        gr.Markdown("Why shortcuts `H(x) = F(x) + x`? Three experiments on this project's own blocks "
                    "(He et al. 2015, arXiv:1512.03385, section 4.2: CIFAR-style nets of 6n+2 layers), "
                    "each shown as last completed on this machine (else as the project measured it), with when, "
                    "where and how it was measured.")
        lab_outputs = []
        for experiment, title in (("degradation", "Degradation: deeper plain nets train worse"),
                                  ("gradients", "Vanishing gradients at initialisation"),
                                  ("plain-vs-resnet", "Plain CNN vs ResNet")):
            with gr.Row():
                if experiment == "gradients":
                    plot = gr.LinePlot(None, x="block", y="log10 gradient", color="variant", title=title,
                                       x_title="block (input to output)", y_title="log10 |gradient|", height=300,
                                       elem_id=f"lab-{experiment}-plot", scale=2)
                else:
                    plot = gr.LinePlot(None, x="step", y="training error", color="net", title=title,
                                       x_title="training step", y_title="training error", y_lim=[0, 1], height=300,
                                       elem_id=f"lab-{experiment}-plot", scale=2)
                gr.Markdown(LAB_TEXT[experiment], elem_id=f"lab-{experiment}-look-for")
            text = gr.Markdown(elem_id=f"lab-{experiment}-text")
            lab_outputs += [plot, text]
        gr.Markdown("### Run a short version live")
        with gr.Row():
            lab_experiment = gr.Radio(["degradation", "gradients", "plain-vs-resnet"], value=LAB_FIRST,
                                      label="Experiment", elem_id="lab-experiment")
            lab_run = gr.Button("Run", variant="primary", elem_id="lab-run")
            lab_stop_btn = gr.Button("Stop", variant="stop", elem_id="lab-stop")
        lab_status = gr.Markdown(elem_id="lab-status")
        # The chart of the experiment chosen shows, from the first page load on (the radio's change event fires
        # only when it changes).
        lab_live_plot = gr.LinePlot(None, x="step", y="training error", color="net", title="Live",
                                    x_title="training step", y_title="training error", height=300,
                                    elem_id="lab-live-plot", visible=LAB_FIRST != "gradients")
        lab_live_gradients = gr.LinePlot(None, x="block", y="log10 gradient", color="variant", title="Live",
                                         x_title="block (input to output)", y_title="log10 |gradient|", height=300,
                                         elem_id="lab-live-gradients", visible=LAB_FIRST == "gradients")

        def _lab_pick(experiment):
            return gr.LinePlot(visible=experiment != "gradients"), gr.LinePlot(visible=experiment == "gradients")

        lab_experiment.change(_lab_pick, lab_experiment, [lab_live_plot, lab_live_gradients], api_name=False,
                              queue=False)

        def _lab_run(experiment):
            for picture, text in lab_live(experiment):
                yield ((gr.skip(), picture) if experiment == "gradients" else (picture, gr.skip())) + (text,)

        lab_run.click(_lab_run, lab_experiment, [lab_live_plot, lab_live_gradients, lab_status], api_name="why_residual",
                      concurrency_limit=1, concurrency_id="lab", show_progress="minimal")
        lab_stop_btn.click(lab_stop, None, None, api_name="stop_why_residual", queue=False)

    with gr.Tab("About", id="about"):
        gr.Markdown(about_markdown())

    demo.load(on_page_load, [browser_state],
              [banner, banner_timer, browser_state, visitor_state, model, model_a, model_b, base, push_model],
              api_name=False, queue=False)
    demo.load(lab_cached, None, lab_outputs, api_name=False, queue=False)
    banner_timer.tick(on_banner_tick, None, [banner, banner_timer], api_name=False, queue=False, show_progress="hidden")

demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CLASSIFY_CONCURRENCY)


def launch_options() -> dict:
    """What `python app.py` passes to launch(); the tests start the app with the same."""
    from resnet_hub.store import store_root

    # ssr_mode=False on every path (a Space sets GRADIO_SSR_MODE=true): Gradio 6.27-6.31's SSR Node proxy
    # reaches the server from loopback, so a forged "Host: localhost" passed its local-request check.
    return {"max_file_size": MAX_FILE_SIZE, "show_error": True, "allowed_paths": [str(store_root() / "examples")],
            "ssr_mode": False}


if __name__ == "__main__":
    demo.launch(**launch_options())
