"""The Fine-tune tab's "Know your data" panel: choosing a zip inspects it (wrong labels, copies, outliers, balance);
each flagged image can be kept, dropped or moved to its suggested class, in bulk too; the fixed set trains, or
downloads as a zip."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd

from ..errors import ResNetHubError
from ..inspection import DROP, KEEP, MOVE
from ..services.inspections import (
    FINDINGS,
    LABEL_ISSUES,
    bulk_drop_copies,
    bulk_drop_label_issues,
    decisions_line,
    findings_page,
)
from .common import UPLOAD_LIMIT
from .context import AppContext
from .workarounds import user_error



@dataclass
class InspectPanel:
    """What the Fine-tune tab wires to: the inspection's id and the visitor's decisions, and the button that trains
    on the fixed set."""

    inspection_id: gr.State
    decisions: gr.State
    train_fixed: gr.Button


def summary_text(found) -> str:
    parts = [f"**{found.summary()}**"]
    if found.warning:
        parts.append(f"⚠️ **{found.warning}**")
    parts.append(f"Balance: {found.balance}.")
    refused = {reason: names for reason, names in found.skipped.items() if names and reason != "junk"}
    for reason, names in refused.items():
        listed = ", ".join(f"`{n}`" for n in names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        parts.append(f"Not read ({reason}): {listed}")
    parts += [f"_{note}_" for note in found.notes]
    if found.embedding_note:
        parts.append(f"_Embeddings: {found.embedding_note}_")
    return "\n\n".join(parts)


def balance_chart(found) -> gr.BarPlot:
    """Images per class, from zero: a scale that started at the smallest class would hide it."""
    frame = pd.DataFrame({"class": list(found.classes), "images": list(found.classes.values())})
    return gr.BarPlot(frame, y_lim=[0, max(found.classes.values(), default=1)])


def build_inspect_panel(ctx: AppContext, visitor_state: gr.State, data_zip: gr.File, use_mnist: gr.Checkbox,
                        base: gr.Dropdown) -> InspectPanel:
    inspections = ctx.inspections
    inspection_id = gr.State(None)
    decisions = gr.State({})
    page_indices = gr.State([])
    selected = gr.State(None)
    with gr.Accordion("Know your data: wrong labels, copies, outliers and balance", open=True,
                      elem_id="inspect-panel"):
        gr.Markdown(f"Choosing a zip inspects it on the embeddings of the base above (a .zip of class folders, up to {UPLOAD_LIMIT}): the images "
                    f"whose label looks wrong, copies (also across classes, and across the training/validation "
                    f"split), images far from every class, and the files the zip reader refused. Click an image to "
                    f"keep, drop or move it; then train on the fixed set.", elem_id="inspect-intro")
        with gr.Row():
            inspect_btn = gr.Button("Inspect the data", elem_id="inspect-start")
            stop_btn = gr.Button("Stop the inspection", variant="stop", elem_id="inspect-stop")
        status = gr.Markdown(elem_id="inspect-status")
        summary = gr.Markdown(elem_id="inspect-summary")
        balance = gr.BarPlot(None, x="class", y="images", title="Images per class", height=200,
                             elem_id="inspect-balance")
        with gr.Row():
            kind = gr.Radio(list(FINDINGS), value=LABEL_ISSUES, label="Show", elem_id="inspect-kind")
            page = gr.Number(value=1, precision=0, minimum=1, label="Page", elem_id="inspect-page")
        caption = gr.Markdown(elem_id="inspect-caption")
        # No preview: a click chooses the image for Keep, Drop or Move (a preview would hide the other captions).
        # fit_columns=False: two copies would otherwise fill the width, each taller than the screen, its caption cut.
        gallery = gr.Gallery(columns=6, height="auto", preview=False, allow_preview=False, fit_columns=False,
                             object_fit="scale-down", show_label=False, elem_id="inspect-gallery")
        with gr.Row():
            chosen = gr.Markdown("_Click an image above to choose what happens to it._", elem_id="inspect-chosen")
            keep_btn = gr.Button("Keep", size="sm", elem_id="inspect-keep")
            drop_btn = gr.Button("Drop", size="sm", elem_id="inspect-drop")
            move_btn = gr.Button("Move to the suggested class", size="sm", elem_id="inspect-move")
        with gr.Row():
            drop_copies = gr.Button("Drop every copy but one per group", elem_id="inspect-drop-copies")
            threshold = gr.Slider(0.5, 1.0, value=0.9, step=0.01, label="Label issues at or above this confidence",
                                  elem_id="inspect-threshold")
            drop_issues = gr.Button("Drop them", elem_id="inspect-drop-issues")
        changes = gr.Markdown(elem_id="inspect-changes")
        with gr.Row():
            train_fixed = gr.Button("Train on the fixed set", variant="primary", elem_id="inspect-train-fixed")
            download_btn = gr.Button("Download the fixed zip", elem_id="inspect-download-start")
        fixed_zip = gr.File(label="The fixed set (PNG, as read: at most 512 px a side)", elem_id="inspect-download")

    def run(data_zip, use_mnist, base, browser_id=None, request: gr.Request = None,
            profile: gr.OAuthProfile | None = None, oauth_token: gr.OAuthToken | None = None):
        """Inspect the chosen data on the chosen base, streaming progress; then show the summary and findings."""
        visitor = ctx.visitor_of(browser_id, request, profile, oauth_token)
        data = "mnist-sample" if use_mnist else data_zip
        if not data:
            raise user_error("no data to inspect: upload a .zip with one folder per class, or tick 'bundled MNIST "
                             "sample'")
        try:
            job = inspections.start(data, base or "resnet18", visitor=visitor)
        except (ResNetHubError, ValueError) as e:
            raise user_error(e) from None
        yield {inspection_id: None, decisions: {}, status: f"Inspecting {job.data_name} on {job.base}…",
               summary: "", gallery: None, caption: "", changes: "", fixed_zip: None}
        try:
            while True:
                event = job.events.get()
                if event is None:
                    break
                ahead = inspections.position(job)
                fraction, what = event
                yield {status: f"**{fraction:.0%}**: {what}" + (f" ({ahead} ahead in line)" if ahead else "")}
        finally:
            if not job.done.is_set():
                inspections.stop(None, job.id)  # the page went away: nobody can press Stop any more
        if job.error:
            raise user_error(job.error)
        if job.result is None:
            yield {status: "**Inspection stopped: nothing found yet.**"}
            return
        found = job.result
        shown = findings_page(found, LABEL_ISSUES, 0, {})
        yield {inspection_id: job.id, status: f"Inspected in {found.seconds:.1f} s.", summary: summary_text(found),
               balance: balance_chart(found), kind: LABEL_ISSUES, page: 1, gallery: shown.items,
               page_indices: shown.indices, caption: page_caption(LABEL_ISSUES, shown),
               changes: decisions_line({})}

    def page_caption(which, shown) -> str:
        if not shown.total:
            return f"**{which}: none found.**"
        return f"**{which}: {shown.total}** (page {shown.page + 1} of {shown.pages})"

    def show(inspection_id, which, page_number, decisions, browser_id=None, request: gr.Request = None,
             profile: gr.OAuthProfile | None = None):
        """One page of one kind of finding."""
        try:
            found = inspections.found(inspection_id, ctx.visitor_of(browser_id, request, profile))
        except ResNetHubError as e:
            raise user_error(e) from None
        shown = findings_page(found, which, int(page_number or 1) - 1, decisions)
        return {gallery: shown.items, page_indices: shown.indices, page: shown.page + 1,
                caption: page_caption(which, shown)}

    def choose(indices, inspection_id, evt: gr.SelectData = None, browser_id=None, request: gr.Request = None,
               profile: gr.OAuthProfile | None = None):
        if evt is None or not isinstance(evt.index, int) or evt.index >= len(indices):
            return gr.skip(), gr.skip()
        index = indices[evt.index]
        found = inspections.found(inspection_id, ctx.visitor_of(browser_id, request, profile))
        suggestion = next((f"; looks like **{i.suggested}** ({i.confidence:.0%})" for i in found.label_issues
                           if i.index == index), "")
        dataset = found.dataset
        return index, (f"Chosen: `{dataset.image_name(index)}`, given **{dataset.classes[dataset.targets[index]]}**"
                       f"{suggestion}")

    def decide(what):
        def apply(index, inspection_id, decisions, which, page_number, browser_id=None, request: gr.Request = None,
                  profile: gr.OAuthProfile | None = None):
            if index is None:
                raise user_error("click an image first")
            visitor = ctx.visitor_of(browser_id, request, profile)
            found = inspections.found(inspection_id, visitor)
            if what == MOVE and index not in {i.index for i in found.label_issues}:
                raise user_error("only an image flagged as probably mislabelled has a suggested class: drop or "
                                 "keep this one")
            decisions = {**decisions, index: what}
            return {decisions_state: decisions, changes: decisions_line(decisions),
                    **show(inspection_id, which, page_number, decisions, browser_id, request, profile)}

        return apply

    def bulk_copies(inspection_id, decisions, which, page_number, browser_id=None, request: gr.Request = None,
                    profile: gr.OAuthProfile | None = None):
        """Drop every copy but the first of each group."""
        return bulk(inspection_id, decisions, which, page_number, None, browser_id, request, profile)

    def bulk_issues(inspection_id, decisions, which, page_number, confidence, browser_id=None,
                    request: gr.Request = None, profile: gr.OAuthProfile | None = None):
        """Drop every label issue at or above ``confidence``."""
        return bulk(inspection_id, decisions, which, page_number, confidence, browser_id, request, profile)

    def bulk(inspection_id, decisions, which, page_number, confidence, browser_id, request, profile):
        visitor = ctx.visitor_of(browser_id, request, profile)
        try:
            found = inspections.found(inspection_id, visitor)
            decisions = (bulk_drop_copies(found, decisions) if confidence is None
                         else bulk_drop_label_issues(found, decisions, float(confidence)))
        except ResNetHubError as e:
            raise user_error(e) from None
        return {decisions_state: decisions, changes: decisions_line(decisions),
                **show(inspection_id, which, page_number, decisions, browser_id, request, profile)}

    def download(inspection_id, decisions, browser_id=None, request: gr.Request = None,
                 profile: gr.OAuthProfile | None = None):
        visitor = ctx.visitor_of(browser_id, request, profile)
        folder = Path(tempfile.mkdtemp(prefix="resnet-hub-fixed-"))
        try:
            found = inspections.found(inspection_id, visitor)
            path = inspections.write_fixed_zip(inspection_id, decisions, folder / f"{Path(found.name).stem}-fixed.zip",
                                               visitor)
        except ResNetHubError as e:
            raise user_error(e) from None
        return str(path)

    def stop(browser_id=None, request: gr.Request = None, profile: gr.OAuthProfile | None = None):
        if inspections.stop(ctx.visitor_of(browser_id, request, profile)):
            gr.Info("Stopping the inspection.")
        else:
            gr.Warning("No inspection of yours is running.")

    decisions_state = decisions
    outputs = [inspection_id, decisions, status, summary, balance, kind, page, gallery, page_indices, caption,
               changes, fixed_zip]
    inputs = [data_zip, use_mnist, base, visitor_state]
    inspect_btn.click(run, inputs, outputs, api_name="inspect", concurrency_limit=4, concurrency_id="inspect",
                      show_progress="minimal")
    data_zip.upload(run, inputs, outputs, api_name=False, concurrency_limit=4, concurrency_id="inspect",
                    show_progress="minimal")
    stop_btn.click(stop, [visitor_state], None, api_name="stop_inspect", queue=False)
    shown_outputs = [gallery, page_indices, page, caption]
    gr.on([kind.input, page.submit], show, [inspection_id, kind, page, decisions, visitor_state], shown_outputs,
          api_name="inspect_findings")
    gallery.select(choose, [page_indices, inspection_id, visitor_state], [selected, chosen], api_name=False)
    decided = [decisions, changes, *shown_outputs]
    for button, what in ((keep_btn, KEEP), (drop_btn, DROP), (move_btn, MOVE)):
        button.click(decide(what), [selected, inspection_id, decisions, kind, page, visitor_state], decided,
                     api_name=f"inspect_{what}")
    drop_copies.click(bulk_copies, [inspection_id, decisions, kind, page, visitor_state], decided,
                      api_name="inspect_drop_copies")
    drop_issues.click(bulk_issues, [inspection_id, decisions, kind, page, threshold, visitor_state], decided,
                      api_name="inspect_drop_label_issues")
    download_btn.click(download, [inspection_id, decisions, visitor_state], fixed_zip, api_name="inspect_fixed_zip")
    return InspectPanel(inspection_id, decisions, train_fixed)

