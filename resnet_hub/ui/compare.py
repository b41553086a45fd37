"""The Compare tab: two models on one image, their answers side by side, whether they agree, and honest timings."""

from __future__ import annotations

import gradio as gr

from ..errors import ResNetHubError
from ..services.registry import COMPARE_RUNS
from .charts import LATENCY_STATS, latency_frame, timings_frame
from .common import CLASSIFY_CONCURRENCY, PageParts, add_examples, gpu, image_from, model_chooser, starter_progress
from .common import with_input_note
from .batches import build_compare_set_section
from .context import AppContext
from .workarounds import checked_sketchpad, uploaded_image, user_error


def verdict_text(result) -> str:
    """Whether the top-1 answers agree, the notes about the input, and how each engine was chosen."""
    (_, pred_a), (_, pred_b) = list(result.predictions.items())[:2]
    verdict = (f"Top-1 **agrees**: both say *{pred_a.top1}*." if result.agree
               else f"Top-1 **differs**: *{pred_a.top1}* vs *{pred_b.top1}*.")
    for note in result.notes:
        verdict = with_input_note(verdict, note)
    # How each engine was chosen: the evidence, in words (too long for a table cell at 1280 px).
    return verdict + "\n\n" + "\n".join(f"- **{r['model']}** runs on {r['why this engine']}" for r in result.table())


def build_compare_tab(ctx: AppContext, visitor_state: gr.State, parts: PageParts) -> None:
    with gr.Tab("Compare", id="compare"):
        with gr.Row():
            with gr.Column():
                image = uploaded_image(sources=["upload", "webcam", "clipboard"], label="Image")
                sketch = checked_sketchpad(label="…or draw a digit", canvas_size=(280, 280))
                with gr.Row():
                    model_a = model_chooser(parts, "Model A", "resnet18", elem_id="compare-model-a")
                    model_b = model_chooser(parts, "Model B", "resnet50", elem_id="compare-model-b")
                go = gr.Button("Compare", variant="primary")
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
        add_examples(image, parts)
        build_compare_set_section(ctx, visitor_state, model_a, model_b)

        @gpu
        def compare(image, sketch, model_a, model_b, browser_id=None, request: gr.Request = None,
                    profile: gr.OAuthProfile | None = None, oauth_token: gr.OAuthToken | None = None,
                    progress=gr.Progress()):
            try:
                result = ctx.registry.compare(image_from(image, sketch), (model_a, model_b),
                                              on_progress=starter_progress(progress),
                                              visitor=ctx.visitor_of(browser_id, request, profile, oauth_token))
            except ResNetHubError as e:
                raise user_error(e) from None
            (_, pred_a), (_, pred_b) = list(result.predictions.items())[:2]
            rows = result.table()
            return pred_a.as_dict(), pred_b.as_dict(), verdict_text(result), timings_frame(rows), latency_frame(rows)

        outputs = [label_a, label_b, verdict, timing_table, timing_chart]
        # An answer that fails leaves no earlier answer behind its error: the answers are cleared first (the
        # chart keeps its last bars: a LinePlot/BarPlot set to None breaks in Gradio 6.31, see drawn_or_kept).
        go.click(lambda: (None, None, ""), None, outputs[:3], api_name=False, queue=False, show_progress="hidden"
                 ).then(compare, [image, sketch, model_a, model_b, visitor_state], outputs,
                        api_name="compare", concurrency_limit=CLASSIFY_CONCURRENCY, concurrency_id="inference")
