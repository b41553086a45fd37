"""The Classify tab: an image (upload, webcam, paste or a drawing) to its top-k classes and a grad-CAM heatmap."""

from __future__ import annotations

import gradio as gr

from ..batch import NOT_SURE
from ..errors import ResNetHubError
from .batches import build_batch_section
from .common import (
    CLASSIFY_CONCURRENCY,
    PageParts,
    add_examples,
    gpu,
    image_from,
    model_chooser,
    starter_progress,
    visible,
    with_input_note,
)
from .context import AppContext
from .workarounds import cached_picture, checked_sketchpad, uploaded_image, user_error


def build_classify_tab(ctx: AppContext, visitor_state: gr.State, parts: PageParts) -> None:
    with gr.Tab("Classify", id="classify"):
        with gr.Row():
            with gr.Column():
                image = uploaded_image(sources=["upload", "webcam", "clipboard"], label="Image", elem_id="classify-image")
                sketch = checked_sketchpad(label="…or draw a digit", canvas_size=(280, 280))
                model = model_chooser(parts, "Model (or type a Hub repo id: org/name)", "resnet50", elem_id="classify-model")
                top_k = gr.Slider(1, 10, value=5, step=1, label="Top-k")
                threshold = gr.Slider(0, 1, value=0, step=0.05, elem_id="classify-not-sure",
                                      label="Not sure below this confidence (0: off): the answer is 'not sure', "
                                            "with the top guesses shown")
                go = gr.Button("Classify", variant="primary")
            with gr.Column():
                labels = gr.Label(label="Top classes", elem_id="classify-label")
                timing = gr.Markdown(elem_id="classify-info")
                heatmap = gr.Image(label="Where the model looked (grad-CAM for the top class)", type="pil")
        add_examples(image, parts)
        build_batch_section(ctx, visitor_state, model, top_k, threshold)

        @gpu
        def classify(image, sketch, model_choice, top_k, browser_id=None, not_sure_below=0.0, request: gr.Request = None,
                     profile: gr.OAuthProfile | None = None, oauth_token: gr.OAuthToken | None = None,
                     progress=gr.Progress()):
            try:
                result = ctx.registry.classify(image_from(image, sketch), model_choice, int(top_k),
                                               on_progress=starter_progress(progress),
                                               visitor=ctx.visitor_of(browser_id, request, profile, oauth_token))
            except ResNetHubError as e:
                raise user_error(e) from None
            info = with_input_note(f"**{result.model}** · {result.latency_ms:.1f} ms for this call · engine: "
                                   f"{result.engine}" + (f" ({result.engine_note})" if result.engine_note else ""),
                                   result.note)
            if not_sure_below and result.prediction.probabilities[0] < not_sure_below:
                info = (f"**{NOT_SURE}**: the top guess has {result.prediction.probabilities[0]:.0%}, below "
                        f"{not_sure_below:.0%}; the top guesses are shown.\n\n{info}")
            return result.prediction.as_dict(), info, cached_picture(visible(result.heatmap), heatmap.GRADIO_CACHE)

        # An answer that fails leaves no earlier answer behind its error: the outputs are cleared first.
        go.click(lambda: (None, "", None), None, [labels, timing, heatmap], api_name=False, queue=False,
                 show_progress="hidden"
                 ).then(classify, [image, sketch, model, top_k, visitor_state, threshold], [labels, timing, heatmap],
                        api_name="classify", concurrency_limit=CLASSIFY_CONCURRENCY, concurrency_id="inference")
