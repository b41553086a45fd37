"""Many images in the app: the Classify tab's zip (or several files) to a streaming table, a CSV and, when the
folders name classes, the verdict; the Compare tab's labelled zip to each model's accuracy, agreement,
disagreements and speed. Both run as owned batch jobs (services.batches). The verdict's views are the fine-tune
results' own (ui.finetune's per-class table and mistakes gallery, charts' confusion matrix)."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from ..batch import CSV_HEADERS
from ..errors import ResNetHubError
from .charts import CONFUSION_CORNER, PER_CLASS_HEADERS, confusion_table, confusion_widths
from .common import UPLOAD_LIMIT
from .context import AppContext
from .finetune import ANY_CLASS, mistakes_shown, per_class_table
from .workarounds import user_error

MAX_TABLE_ROWS = 1000  # rows drawn on the page; the CSV holds them all
UPLOAD_NOTE = f"up to {UPLOAD_LIMIT} per file"
BATCH_CONCURRENCY = 4  # page connections following a batch; the batches themselves run one at a time


def mistakes_of(evaluation, true, predicted):
    """The fine-tune results' gallery and caption (ui.finetune.mistakes_shown), for a set that is no validation split."""
    shown, caption = mistakes_shown(evaluation, true, predicted)
    return shown, caption.replace("validation image", "image")


def rows_frame(rows) -> pd.DataFrame:
    return pd.DataFrame([r.cells() for r in rows[:MAX_TABLE_ROWS]], columns=CSV_HEADERS).astype(
        {"file": "str", "folder": "str", "top-1": "str", "top-k": "str", "error": "str"})


def _files(files) -> list:
    if files is None:
        return []
    return [getattr(f, "name", f) for f in (files if isinstance(files, list) else [files])]


def build_batch_section(ctx: AppContext, visitor_state: gr.State, model, top_k, threshold) -> None:
    """The Classify tab's batch part, under its single-image part; ``threshold`` is the tab's "not sure" slider."""
    with gr.Accordion(f"Many images: a zip or several files in, a table out ({UPLOAD_NOTE})", open=False,
                      elem_id="batch"):
        files = gr.File(label=f"A zip of images (flat, or one folder per class: then you also get the accuracy), or "
                              f"several images; {UPLOAD_NOTE}", file_count="multiple", file_types=[".zip", "image"],
                        elem_id="batch-files")
        with gr.Row():
            tta = gr.Checkbox(False, label="Test-time augmentation: also look at each photo's mirror image "
                                           "(photo models only; about twice the time)", elem_id="batch-tta")
            run = gr.Button("Classify them all", variant="primary", elem_id="batch-run")
            stop = gr.Button("Stop (keep the rows so far)", elem_id="batch-stop")
        progress = gr.Markdown(elem_id="batch-progress")
        table = gr.Dataframe(headers=CSV_HEADERS, label=f"One row per image (the first {MAX_TABLE_ROWS:,} shown; "
                                                        f"the CSV holds all)", interactive=False, wrap=True,
                             max_height=420, column_widths=["26%", "9%", "11%", "10%", "28%", "16%"],
                             elem_id="batch-table")
        download = gr.File(label="The table as CSV", elem_id="batch-download")
        verdict = gr.Markdown(elem_id="batch-verdict")
        confusion = gr.Dataframe(label="Confusion matrix (rows: true class, columns: predicted). Click a cell to see "
                                       "its images.", interactive=False, headers=[CONFUSION_CORNER], wrap=True,
                                 elem_id="batch-confusion")
        per_class = gr.Dataframe(label="Per class: precision, recall, F1, support", interactive=False,
                                 headers=PER_CLASS_HEADERS, elem_id="batch-per-class")
        caption = gr.Markdown(elem_id="batch-mistakes-caption")
        mistakes = gr.Gallery(columns=4, height="auto", preview=False, object_fit="scale-down", show_label=False,
                              elem_id="batch-mistakes")
        job_id = gr.State(None)

    outputs = [job_id, progress, table, download, verdict, confusion, per_class, mistakes, caption, run]

    def classify_batch(files, model_choice, k, not_sure_below, use_tta, browser_id=None, request: gr.Request = None,
                       profile: gr.OAuthProfile | None = None, oauth_token: gr.OAuthToken | None = None):
        visitor = ctx.visitor_of(browser_id, request, profile, oauth_token)
        try:
            job = ctx.batches.start_classify(_files(files), model_choice, top_k=int(k),
                                             min_confidence=float(not_sure_below) or None, tta=bool(use_tta),
                                             visitor=visitor)
        except ResNetHubError as e:
            raise user_error(e) from None
        empty = rows_frame([])
        yield (job.id, f"{job.total:,} images to classify…", empty, None, "", None, None, None, "",
               gr.Button(interactive=False))
        for _ in ctx.batches.stream(job):
            ahead = ctx.batches.position(job)
            said = f"Waiting: {ahead} batch{'es' * (ahead != 1)} ahead" if ahead and not job.rows else job.progress
            yield job.id, said, rows_frame(job.rows), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), \
                gr.skip(), gr.skip()
        evaluation = job.evaluation
        said = (f"**Stopped**: {job.progress}; the table and the CSV keep them." if job.stop.is_set() else
                f"**Done**: {job.progress}.")
        if job.error:
            said = f"**{job.error}**" + (f" ({job.progress}: kept)" if job.rows else "")
        csv = str(job.csv) if job.csv else None
        if evaluation is None or evaluation.results is None:
            text = evaluation.summary() if evaluation is not None else ""
            yield job.id, said, rows_frame(job.rows), csv, text, None, None, None, "", gr.Button(interactive=True)
            return
        labels = evaluation.results.classes
        shown, caption_text = mistakes_of(evaluation, None, None)
        yield (job.id, said, rows_frame(job.rows), csv, evaluation.summary(),
               gr.Dataframe(confusion_table(evaluation.results.confusion_matrix, labels),
                            column_widths=confusion_widths(labels)),
               per_class_table(evaluation.results), shown, caption_text, gr.Button(interactive=True))

    def stop_batch(job, browser_id=None, request: gr.Request = None, profile: gr.OAuthProfile | None = None):
        stopped = ctx.batches.stop(job, ctx.visitor_of(browser_id, request, profile))
        return "Stopping after the images under way…" if stopped else gr.skip()

    def confusion_cell(job, browser_id=None, evt: gr.SelectData = None, request: gr.Request = None,
                       profile: gr.OAuthProfile | None = None):
        done = ctx.batches.finished(job, ctx.visitor_of(browser_id, request, profile))
        if done is None or done.evaluation is None or done.evaluation.results is None or evt is None:
            return gr.skip(), gr.skip()
        row, column = evt.index
        labels = done.evaluation.results.classes
        if column == 0 or row >= len(labels) or column - 1 >= len(labels):
            return mistakes_of(done.evaluation, ANY_CLASS, ANY_CLASS)
        return mistakes_of(done.evaluation, labels[row], labels[column - 1])

    run.click(classify_batch, [files, model, top_k, threshold, tta, visitor_state], outputs,
              api_name="classify_batch", concurrency_limit=BATCH_CONCURRENCY, concurrency_id="batches")
    stop.click(stop_batch, [job_id, visitor_state], [progress], api_name="classify_batch_stop", queue=False)
    confusion.select(confusion_cell, [job_id, visitor_state], [mistakes, caption], api_name="classify_batch_mistakes")


def accuracy_time_frame(table: list[dict]) -> pd.DataFrame:
    """One point per model: accuracy against milliseconds per image (end to end, from the file's bytes)."""
    frame = pd.DataFrame([{"model": r["model"], "ms per image": float(r["ms per image"]),
                           "accuracy": float("nan") if r["accuracy"] is None else float(r["accuracy"])}
                          for r in table])
    return frame.astype({"model": "str", "ms per image": "float64", "accuracy": "float64"})


def build_compare_set_section(ctx: AppContext, visitor_state: gr.State, model_a, model_b) -> None:
    """The Compare tab's labelled-set part: the two chosen models on one zip of class folders."""
    with gr.Accordion(f"On your data: a labelled zip (one folder per class; {UPLOAD_NOTE})", open=False,
                      elem_id="compare-set"):
        files = gr.File(label=f"A zip with one folder of images per class, named for the classes; {UPLOAD_NOTE}",
                        file_count="multiple", file_types=[".zip", "image"], elem_id="compare-set-files")
        with gr.Row():
            tta = gr.Checkbox(False, label="Test-time augmentation (photo models only)", elem_id="compare-set-tta")
            run = gr.Button("Compare on this set", variant="primary", elem_id="compare-set-run")
            stop = gr.Button("Stop", elem_id="compare-set-stop")
        progress = gr.Markdown(elem_id="compare-set-progress")
        summary = gr.Markdown(elem_id="compare-set-summary")
        table = gr.Dataframe(label="Each model on the set: accuracy, and time per image on this machine's chosen "
                                   "engine (end to end, from the file's bytes)", interactive=False, wrap=True,
                             headers=["model", "accuracy", "images", "images/s", "ms per image", "engine", "macro F1"],
                             elem_id="compare-set-table")
        chart = gr.ScatterPlot(x="ms per image", y="accuracy", color="model", title="Accuracy against time per image",
                               x_title="ms per image", y_title="accuracy", y_lim=[0, 1], height=300,
                               elem_id="compare-set-chart")
        gallery = gr.Gallery(label="Where they disagree", columns=4, height="auto", preview=False,
                             object_fit="scale-down", elem_id="compare-set-disagreements")
        job_id = gr.State(None)

    def compare_set(files, a, b, use_tta, browser_id=None, request: gr.Request = None,
                    profile: gr.OAuthProfile | None = None, oauth_token: gr.OAuthToken | None = None):
        visitor = ctx.visitor_of(browser_id, request, profile, oauth_token)
        try:
            job = ctx.batches.start_compare(_files(files), (a, b), tta=bool(use_tta), visitor=visitor)
        except ResNetHubError as e:
            raise user_error(e) from None
        yield job.id, f"{job.total:,} images, two models…", "", gr.skip(), gr.skip(), gr.skip()
        for _ in ctx.batches.stream(job):
            yield job.id, job.progress, gr.skip(), gr.skip(), gr.skip(), gr.skip()
        result = job.comparison
        if job.error or result is None:
            raise user_error(job.error or "the comparison stopped before any model finished")
        rows = result.table()
        said = "**Stopped**: the figures cover the images answered before the stop." if job.stop.is_set() else \
            "**Done.**"
        yield (job.id, said, result.summary(), pd.DataFrame(rows) if rows else None,
               accuracy_time_frame(rows) if rows else gr.skip(), result.gallery())

    def stop_compare(job, browser_id=None, request: gr.Request = None, profile: gr.OAuthProfile | None = None):
        return "Stopping…" if ctx.batches.stop(job, ctx.visitor_of(browser_id, request, profile)) else gr.skip()

    run.click(compare_set, [files, model_a, model_b, tta, visitor_state],
              [job_id, progress, summary, table, chart, gallery], api_name="compare_set",
              concurrency_limit=BATCH_CONCURRENCY, concurrency_id="batches")
    stop.click(stop_compare, [job_id, visitor_state], [progress], api_name="compare_set_stop", queue=False)
