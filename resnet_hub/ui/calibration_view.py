"""A fine-tune's calibrated confidence, in its results: both calibration errors, the reliability diagram, and the
share of validation images answered (and their accuracy) at each confidence threshold, to pick a "not sure" one."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from .charts import THRESHOLD_HEADERS, calibration_text, reliability_frame, thresholds_frame


@dataclass
class CalibrationView:
    text: gr.Markdown
    diagram: gr.LinePlot
    thresholds: gr.Dataframe

    @classmethod
    def build(cls) -> CalibrationView:
        """The components, in the results column, empty until a run finishes."""
        text = gr.Markdown(elem_id="finetune-calibration")
        diagram = gr.LinePlot(None, x="confidence", y="accuracy", color="series", x_lim=[0, 1], y_lim=[0, 1],
                              title="Reliability (validation): accuracy against confidence",
                              x_title="confidence (mean of the bin)", y_title="accuracy", height=260,
                              elem_id="reliability-plot")
        thresholds = gr.Dataframe(label="A \"not sure\" threshold: validation images answered at each confidence "
                                        "threshold, and their accuracy", interactive=False, headers=THRESHOLD_HEADERS,
                                  elem_id="finetune-thresholds")
        return cls(text, diagram, thresholds)

    @property
    def outputs(self) -> list:
        return [self.text, self.diagram, self.thresholds]

    def shown(self, calibration) -> tuple:
        """What the components show for a run's :class:`~resnet_hub.calibration.Calibration` (None: nothing)."""
        return calibration_text(calibration), reliability_frame(calibration), thresholds_frame(calibration)

    def wire(self, start: gr.Button, after, jobs, ctx, job_id: gr.State, visitor_state: gr.State) -> None:
        """Clear the view when a run starts; fill it from the run's review (``jobs.review``) once ``after`` (the
        results' event chain) has run."""

        def show(job_id, browser_id=None, request: gr.Request = None, profile: gr.OAuthProfile | None = None):
            review = jobs.review(job_id, ctx.visitor_of(browser_id, request, profile))
            return self.shown(review.calibration if review is not None else None)

        start.click(lambda: self.shown(None), None, self.outputs, api_name=False, queue=False)
        after.then(show, [job_id, visitor_state], self.outputs, api_name=False)
