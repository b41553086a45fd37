"""The Fine-tune tab: a zip of class folders (or the MNIST sample) to a model of the store, with live curves, Stop,
per-class results, the images it got wrong, a download and a push to the Hub."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from ..errors import ResNetHubError
from ..finetune_config import FREEZE_ADVICE, FinetuneConfig
from ..services.publish import model_downloads, push_stored_model
from ..store import stored_model
from .calibration_view import CalibrationView
from .charts import CONFUSION_CORNER, PER_CLASS_HEADERS, accuracy_curves, confusion_table, confusion_widths, loss_curve
from .common import UPLOAD_LIMIT, PageParts, gpu, model_chooser
from .context import AppContext
from .inspect import build_inspect_panel
from .workarounds import drawn_or_kept, user_error

ANY_CLASS = "(any)"
FREEZE_AUTO = "auto"
# "auto" is explained in the note under the controls: a longer label was cut at "auto (3 for a pretrained b" in the
# box, and read as 3 for every run (digits and runs from scratch train every stage).
FREEZE_CHOICES = [("auto (see below)", FREEZE_AUTO), ("-1: none, train all", -1),
                  ("0: the stem", 0), *((f"{n}: stem + layer1..{n}" if n > 1 else "1: stem + layer1", n) for n in (1, 2, 3)),
                  ("4: all but the head", 4)]


def running_button() -> gr.Button:
    return gr.Button("Training… (Stop ends the run)", interactive=False)


def idle_button() -> gr.Button:
    return gr.Button("Start", interactive=True)


def progress_line(event) -> str:
    return (f"epoch {event.epoch + 1}/{event.epochs} · step {event.step}/{event.total_steps} "
            f"({event.step / event.total_steps:.0%}) · {event.images_per_s:.0f} images/s · about {event.eta_s:.0f} s left")


def queue_line(ahead: int) -> str:
    return (f"**Waiting in line: {ahead} training{'s' * (ahead != 1)} ahead of yours** (one trains at a time on "
            f"this machine, fine-tunes and the lab's live runs alike). It starts by itself; Stop leaves the line.")


def against_the_start(history, result) -> str:
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


def finished_text(job, history) -> str:
    """What a run that saved a model says: how it ended, its validation accuracy, where it is now."""
    result = job.result
    stopped = (f"**{result.reason.capitalize()} at epoch {result.stopped_at['epoch']}, step {result.stopped_at['step']} "
               f"of {result.stopped_at['total_steps']}: kept what it had learned.** ") if result.stopped_at else ""
    return (f"{stopped}**Validation accuracy {result.val_accuracy:.2%}**{against_the_start(history, result)} on "
            f"{len(result.confusion_matrix)} classes; {result.images_per_s:.0f} images/s. Saved as "
            f"`{job.folder.name}`: now in the Classify and Compare choosers.")


def per_class_table(results) -> pd.DataFrame:
    per_class = pd.DataFrame(results.per_class).rename(columns={"f1": "F1"})[PER_CLASS_HEADERS]
    for score in ("precision", "recall", "F1"):  # one format down each column ("1", "0.99" and "0.9899" mixed)
        per_class[score] = per_class[score].map("{:.2f}".format)
    return per_class


def mistakes_shown(review, true, predicted):
    """(gallery, caption) of the misclassified validation images of one true/predicted pair (None: any class)."""
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


def build_finetune_tab(ctx: AppContext, visitor_state: gr.State, parts: PageParts) -> None:
    jobs = ctx.jobs
    with gr.Tab("Fine-tune", id="finetune"):
        job_id = gr.State(None)
        if ctx.multi_user:
            gr.Markdown(f"**Your models are yours.** On this Space, a model you fine-tune is listed, used, downloaded "
                        f"and pushed only from this browser (or under your Hugging Face login), and it is **deleted "
                        f"{ctx.retention_hours:g} hours after it was trained**: download it or push it to the Hub to "
                        f"keep it. One training runs at a time on this machine; yours waits its turn in line.",
                        elem_id="finetune-ownership")
        with gr.Row():
            with gr.Column():
                data_zip = gr.File(label=f"A .zip with one folder per class (up to {UPLOAD_LIMIT})", file_types=[".zip"],
                                   type="filepath",
                                   elem_id="finetune-zip")
                use_mnist = gr.Checkbox(label="Use the bundled MNIST sample instead (5,000 digits)", value=False)
                base = model_chooser(parts, "Start from", "resnet18",
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
                accuracy_plot = gr.LinePlot(None, x="images", y="accuracy", color="series", title="Accuracy",
                                            x_title="training images seen", y_title="accuracy", y_lim=[0, 1],
                                            height=220, elem_id="accuracy-plot")
                confusion = gr.Dataframe(label="Confusion matrix (validation; rows: true class, columns: predicted). "
                                               "Click a cell to see its images.", interactive=False,
                                         headers=[CONFUSION_CORNER], wrap=True, elem_id="finetune-confusion")
                calibration = CalibrationView.build()
                per_class = gr.Dataframe(label="Per class (validation): precision, recall, F1, support",
                                         interactive=False, headers=PER_CLASS_HEADERS, elem_id="finetune-per-class")
                with gr.Row():
                    true_class = gr.Dropdown([ANY_CLASS], value=ANY_CLASS, label="True class",
                                             elem_id="finetune-true-class")
                    predicted_class = gr.Dropdown([ANY_CLASS], value=ANY_CLASS, label="Predicted as",
                                                  elem_id="finetune-predicted-class")
                mistakes_caption = gr.Markdown(elem_id="finetune-mistakes-caption")
                # No label: Gradio 6.31 draws a gallery's label over its first row of tiles; the caption above says
                # what the gallery holds.
                mistakes = gr.Gallery(label="Misclassified validation images, most confident first", columns=4,
                                      height="auto", preview=False, object_fit="scale-down", show_label=False,
                                      elem_id="finetune-mistakes")
                download = gr.File(label="Download: the weights (a zip of model.safetensors + config.json + "
                                         "README.md) and model.onnx (opset 17, checked against PyTorch)",
                                   file_count="multiple", elem_id="finetune-download")
        panel = build_inspect_panel(ctx, visitor_state, data_zip, use_mnist, base)
        with gr.Accordion("Push to the Hugging Face Hub", open=False):
            if gr.utils.get_space() is not None:
                # The login button needs a real Space's OAuth app; elsewhere Gradio would mock it with this
                # machine's own saved token (and refuse to start without one).
                gr.LoginButton()
            push_model = model_chooser(parts, "Model fine-tuned here", None, elem_id="push-model")
            repo_id = gr.Textbox(label="Repo id (your-name/model-name)")
            token = gr.Textbox(label="Write token (local runs; never stored or logged)", type="password",
                               visible=not ctx.multi_user)
            include_data_names = gr.Checkbox(
                False, label="Name my data in the card (its file name and the names of misclassified images); "
                             "otherwise the card gives only counts, settings and scores", elem_id="push-data-names")
            push_btn = gr.Button("Push")
            push_result = gr.Markdown()

        @gpu(duration=300)
        def train_fixed(data_zip, use_mnist, base, epochs, lr, freeze, name, seed=0, browser_id=None,
                        inspection_id=None, decisions=None, request: gr.Request = None,
                        profile: gr.OAuthProfile | None = None, oauth_token: gr.OAuthToken | None = None):
            """Train on the inspected set with the visitor's fixes (dropped and moved images)."""
            visitor = ctx.visitor_of(browser_id, request, profile, oauth_token)
            try:
                data = ctx.inspections.fixed_dataset(inspection_id, {int(k): v for k, v in (decisions or {}).items()},
                                                     visitor)
            except ResNetHubError as e:
                raise user_error(e) from None
            yield from train(data, False, base, epochs, lr, freeze, name, seed, browser_id, request, profile,
                             oauth_token)

        @gpu(duration=300)
        def train(data_zip, use_mnist, base, epochs, lr, freeze, name, seed=0, browser_id=None,
                  request: gr.Request = None, profile: gr.OAuthProfile | None = None,
                  oauth_token: gr.OAuthToken | None = None):
            """Stream a run's state into the page: the status line carries the progress, so no overlay hides
            results."""
            visitor = ctx.visitor_of(browser_id, request, profile, oauth_token)
            data = "mnist-sample" if use_mnist else data_zip
            if data is None or (isinstance(data, str) and not data):
                raise user_error("no data: upload a .zip with one folder per class, or tick 'bundled MNIST sample'")
            while (build := ctx.registry.pending_starter(base)) is not None and not build.done.wait(1.0):
                yield {status: f"Waiting for the {build.describe()}.", start: running_button(),
                       **parts.listed(ctx.registry, visitor)}
            try:
                config = FinetuneConfig(base=base, epochs=int(epochs), lr=float(lr),
                                        freeze=None if freeze in (None, FREEZE_AUTO) else int(freeze),
                                        seed=int(seed) if seed is not None else 0)  # image size: by the data
                job = jobs.start(data, config, name or None, visitor=visitor)
            except (ResNetHubError, ValueError, TypeError) as e:
                raise user_error(e) from None
            history = []
            fixes = ", ".join(f"{n} {what}" for what, n in job.dataset.fixes.items())
            summary = (f"Training on {job.dataset.summary()}{f' (fixed: {fixes})' if fixes else ''}. Will be saved "
                       f"as `{job.folder.name}`.")
            try:
                waiting = jobs.position(job) > 0
                yield {job_id: job.id, status: f"{summary}\n\n{queue_line(jobs.position(job))}" if waiting else summary,
                       loss_plot: drawn_or_kept(loss_curve(history)),
                       accuracy_plot: drawn_or_kept(accuracy_curves(history)), confusion: None, download: None,
                       start: running_button(), **parts.listed(ctx.registry, visitor)}
                for batch in jobs.stream(job):
                    if waiting and not batch:
                        waiting = jobs.position(job) > 0
                        if waiting:
                            yield {status: f"{summary}\n\n{queue_line(jobs.position(job))}"}
                        continue
                    waiting = False
                    history += batch
                    steps = [e for e in batch if e.kind == "step" and e.total_steps]
                    messages = [e.message for e in batch if e.message]
                    if steps or messages:
                        line = summary + "\n\n" + (f"**{progress_line(steps[-1])}**" if steps else "")
                        line += "".join(f"\n\n{m}" for m in messages[-1:])
                        yield {status: line, loss_plot: drawn_or_kept(loss_curve(history)),
                               accuracy_plot: drawn_or_kept(accuracy_curves(history))}
            finally:
                # The visitor left (Gradio closed this generator): nobody can press Stop any more.
                if not job.done.is_set():
                    jobs.stop(job.id)
            if job.error:
                raise user_error(job.error)
            result = job.result
            if result is None:  # stopped while waiting in line
                yield {job_id: None, status: "**Stopped before its turn came: nothing trained, nothing saved.**",
                       loss_plot: None, accuracy_plot: None, confusion: None, download: None, start: idle_button(),
                       **parts.listed(ctx.registry, visitor)}
                return
            if result.model is None:  # cancelled, or stopped before it learned anything
                yield {job_id: None, status: f"**{result.reason}: nothing saved.**",
                       loss_plot: drawn_or_kept(loss_curve(history)),
                       accuracy_plot: drawn_or_kept(accuracy_curves(history)), confusion: None, download: None,
                       start: idle_button(), **parts.listed(ctx.registry, visitor)}
                return
            notes = "".join(f"\n\n_{n}_" for n in result.model.info.notes)
            files, export_note = model_downloads(job.folder)
            # job.id stays in the page's state: the results view below reads this run's mistakes by it.
            fixed = f"\n\nTrained on the fixed set: {fixes}." if fixes else ""
            yield {job_id: job.id, status: finished_text(job, history) + fixed + notes + f"\n\n_{export_note}_",
                   loss_plot: loss_curve(history), accuracy_plot: accuracy_curves(history),
                   confusion: gr.Dataframe(confusion_table(result.confusion_matrix, result.model.labels),
                                           column_widths=confusion_widths(result.model.labels)),
                   download: [str(f) for f in files], start: idle_button(), **parts.listed(ctx.registry, visitor)}

        def results_view(job_id, browser_id=None, request: gr.Request = None,
                         profile: gr.OAuthProfile | None = None):
            """After a run: its per-class table, the class choosers and every misclassified image, most confident
            first."""
            review = jobs.review(job_id, ctx.visitor_of(browser_id, request, profile))
            if review is None:
                return {per_class: None, true_class: gr.Dropdown(choices=[ANY_CLASS], value=ANY_CLASS),
                        predicted_class: gr.Dropdown(choices=[ANY_CLASS], value=ANY_CLASS), mistakes: None,
                        mistakes_caption: ""}
            choices = [ANY_CLASS, *review.results.classes]
            shown, caption = mistakes_shown(review, None, None)
            return {per_class: per_class_table(review.results), true_class: gr.Dropdown(choices=choices, value=ANY_CLASS),
                    predicted_class: gr.Dropdown(choices=choices, value=ANY_CLASS), mistakes: shown,
                    mistakes_caption: caption}

        def mistakes_for(job_id, true, predicted, browser_id=None, request: gr.Request = None,
                         profile: gr.OAuthProfile | None = None):
            """The misclassified validation images of one true/predicted pair (a confusion-matrix cell)."""
            review = jobs.review(job_id, ctx.visitor_of(browser_id, request, profile))
            if review is None:
                raise user_error("no finished run of yours to look at: fine-tune a model first")
            return mistakes_shown(review, true, predicted)

        def confusion_cell(job_id, browser_id=None, evt: gr.SelectData = None, request: gr.Request = None,
                           profile: gr.OAuthProfile | None = None):
            """A click on a confusion-matrix cell: choose its true and predicted classes and show those images."""
            review = jobs.review(job_id, ctx.visitor_of(browser_id, request, profile))
            if review is None or evt is None or not isinstance(evt.index, (list, tuple)) or evt.index[1] == 0:
                return gr.skip(), gr.skip(), gr.skip(), gr.skip()
            row, column = evt.index
            classes = review.results.classes
            true, predicted = classes[row], classes[column - 1]
            return true, predicted, *mistakes_shown(review, true, predicted)

        def stop(job_id, browser_id=None, request: gr.Request = None, profile: gr.OAuthProfile | None = None):
            if jobs.stop(job_id, ctx.visitor_of(browser_id, request, profile)):
                gr.Info("Stopping at the next step: what it has learned is validated and saved, marked as stopped.")
            else:
                gr.Warning("No run of yours is in progress.")

        def cancel(job_id, browser_id=None, request: gr.Request = None, profile: gr.OAuthProfile | None = None):
            if jobs.cancel(job_id, ctx.visitor_of(browser_id, request, profile)):
                gr.Info("Cancelling at the next step: nothing will be saved.")
            else:
                gr.Warning("No run of yours is in progress.")

        def push(model_choice, repo_id, token_text, include_data_names=False, browser_id=None,
                 request: gr.Request = None, profile: gr.OAuthProfile | None = None,
                 oauth_token: gr.OAuthToken | None = None):
            visitor = ctx.visitor_of(browser_id, request, profile, oauth_token)
            # A Space visitor pushes with their own login only; the pasted token is for a local run of the app.
            pasted = None if ctx.multi_user else (token_text or "").strip()
            token = (oauth_token.token if oauth_token is not None else None) or pasted or None
            if not model_choice or not model_choice.startswith("local:"):
                raise user_error("choose a model fine-tuned here to push")
            folder = stored_model(model_choice.removeprefix("local:"), visitor)
            if folder is None:
                raise user_error(f"{model_choice.removeprefix('local:')} is not one of your models: pick one from "
                                 f"the list")
            if not token:
                raise user_error("log in with Hugging Face (or paste a write token locally) before pushing")
            try:
                url = push_stored_model(folder, (repo_id or "").strip(), token,
                                        include_data_names=bool(include_data_names))
            except ResNetHubError as e:
                raise user_error(e) from None
            return f"Pushed: {url}"

        # The status line carries the run's progress ("minimal": no overlay over the plots, the results
        # or the inputs); the Start button says a run is going and comes back when it ends, however it ends.
        run_inputs = [data_zip, use_mnist, base, epochs, lr, freeze, name, seed, visitor_state]
        run_outputs = [job_id, status, loss_plot, accuracy_plot, confusion, download, start, *parts.choosers]
        for button, handler, inputs, api_name in (
                (start, train, run_inputs, "finetune"),
                (panel.train_fixed, train_fixed, [*run_inputs, panel.inspection_id, panel.decisions],
                 "finetune_fixed")):
            # Several may be in the handler: one trains (resnet_hub.training_slot), the others show their place in
            # line, which a run held in Gradio's own queue could not.
            finished = button.click(handler, inputs, run_outputs, api_name=api_name, concurrency_limit=4,
                                    concurrency_id="finetune", show_progress="minimal",
                                    ).then(idle_button, None, start, api_name=False, queue=False
                                    ).then(results_view, [job_id, visitor_state],
                                           [per_class, true_class, predicted_class, mistakes, mistakes_caption],
                                           api_name=False)
            calibration.wire(button, finished, jobs, ctx, job_id, visitor_state)
        stop_btn.click(stop, [job_id, visitor_state], None, api_name="stop_finetune", queue=False)
        cancel_btn.click(cancel, [job_id, visitor_state], None, api_name="cancel_finetune", queue=False)
        confusion.select(confusion_cell, [job_id, visitor_state],
                         [true_class, predicted_class, mistakes, mistakes_caption], api_name=False)
        gr.on([true_class.input, predicted_class.input], mistakes_for,
              [job_id, true_class, predicted_class, visitor_state], [mistakes, mistakes_caption],
              api_name="finetune_mistakes")
        push_btn.click(push, [push_model, repo_id, token, include_data_names, visitor_state], [push_result],
                       api_name="push")
