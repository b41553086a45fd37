"""The data each chart and table draws, as typed pandas frames: built from the services' results, drawn by the tabs.

No Gradio here; the Gradio 6.31 behaviours a frame's shape works around are named where they shape it.
"""

from __future__ import annotations

import math

import pandas as pd

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


LOSS_SERIES = ("train loss",)


ACCURACY_SERIES = ("train accuracy", "validation accuracy")


def loss_curve(history) -> pd.DataFrame | None:
    """Training loss per step: its own plot, on its own scale (2.3 at the start beside accuracies of 0-1 hides both)."""
    rows = [(e.images, "train loss", e.loss) for e in history if e.kind == "step" and e.loss is not None]
    return curve_frame(rows, "loss", LOSS_SERIES)


def accuracy_curves(history) -> pd.DataFrame | None:
    """Training accuracy per step and validation accuracy per epoch, on a 0-1 axis."""
    rows = [(e.images, "train accuracy", e.train_accuracy) for e in history
            if e.kind == "step" and e.train_accuracy is not None]
    # Before training (epoch 0), after each epoch, and where a stopped run was validated.
    rows += [(e.images, "validation accuracy", e.val_accuracy) for e in history
             if e.kind in ("epoch", "stopped") and e.val_accuracy is not None]
    return curve_frame(rows, "accuracy", ACCURACY_SERIES)


def curve_frame(rows, y: str, series: tuple[str, ...]) -> pd.DataFrame | None:
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


CONFUSION_CORNER = "true \\ predicted"


PER_CLASS_HEADERS = ["class", "precision", "recall", "F1", "support"]  # results.per_class's keys, as the table shows them


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
    frame = curve_frame(rows, "training error", _lab_series(result.experiment, result.settings))
    return None if frame is None else frame.rename(columns={"images": "step", "series": "net"})


GRADIENT_FLOOR = 1e-8  # smaller gradients (0 included: a vanished one underflows) are drawn here, and labelled so


SAME_LINE = 0.1  # log10 units (2 px on the chart): two initialisations this close at every block are one line


def lab_gradient_curves(result) -> pd.DataFrame | None:
    """log10 of the gradient reaching each block's output, for every variant at the deepest depth measured.

    A gradient under ``GRADIENT_FLOOR`` is drawn at it, "floored" in its label (a line of one point, or none, would
    not be drawn at all), and where BatchNorm makes the two initialisations give the same line it is drawn once.
    """
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



RELIABILITY_SERIES = ("perfectly calibrated", "before calibration", "after calibration")
THRESHOLD_HEADERS = ["confidence at least", "images answered", "accuracy of those answered"]


def reliability_frame(calibration) -> pd.DataFrame | None:
    """A reliability diagram (Guo et al. 2017, fig. 1) as lines: per confidence bin with images, their accuracy
    against their mean confidence, before and after calibration, beside the diagonal a calibrated model follows.
    Every series is named from the first frame on (see :func:`curve_frame`): "after" has a NaN placeholder when no
    temperature was fitted."""
    if calibration is None:
        return None
    rows = [(0.0, "perfectly calibrated", 0.0), (1.0, "perfectly calibrated", 1.0)]
    for series, bins in (("before calibration", calibration.reliability_before),
                         ("after calibration", calibration.reliability_after)):
        points = [(b["confidence"], series, b["accuracy"]) for b in bins if b["count"]]
        rows += points or [(0.0, series, float("nan"))]
    frame = pd.DataFrame(rows, columns=["confidence", "series", "accuracy"])
    return frame.astype({"confidence": "float64", "series": "str", "accuracy": "float64"})


def thresholds_frame(calibration) -> pd.DataFrame:
    """Per confidence threshold: the share of validation images answered (the rest: "not sure") and their accuracy."""
    rows = [] if calibration is None else calibration.thresholds
    return pd.DataFrame([[f"{r['threshold']:.2f}", f"{r['answered']:.1%} ({r['images']})",
                          "-" if r["accuracy"] is None else f"{r['accuracy']:.1%}"] for r in rows],
                        columns=THRESHOLD_HEADERS)


def calibration_text(calibration) -> str:
    """Both calibration errors in words, or why there is no temperature."""
    if calibration is None:
        return ""
    if not calibration.fitted:
        return f"**Confidence:** {calibration.note}. Expected calibration error {calibration.ece_before:.3f}."
    return (f"**Calibrated confidence:** temperature {calibration.temperature:.3f}. Expected calibration error "
            f"(ECE, {calibration.bins} equal-width bins, {calibration.images} validation images, 2-fold "
            f"cross-validated) **{calibration.ece_before:.3f} before, {calibration.ece_after:.3f} after**: the "
            f"confidence shown is softmax(logits / {calibration.temperature:.3f}).")
