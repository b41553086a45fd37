"""R18 vs R50 on your data: several models evaluated on one labelled set, with their agreement, the images they
disagree on, and each one's images/s on this machine's chosen engine: the deploy decision, measured.

Models with different classes are compared on the classes they share: each answers among those only, and the
verdict names them.

>>> result = compare_on_data(["resnet18", "resnet50"], "test.zip")   # doctest: +SKIP
>>> result.table()[0]["accuracy"], result.agreement                   # doctest: +SKIP
(0.91, 0.94)
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .evaluation import Evaluation, evaluate
from .image_stream import StreamPlan, plan_stream
from .predict import Predictor, _unique_names

MAX_DISAGREEMENTS_SHOWN = 48


@dataclass
class SetComparison:
    """Each model's :class:`~resnet_hub.evaluation.Evaluation` of one set, and where their answers differ."""

    evaluations: dict[str, Evaluation]
    shared_classes: list[str] | None  # None: every model has the same classes
    agreement: float | None  # share of images every model answered alike (top-1)
    disagreements: list[dict[str, Any]] = field(default_factory=list)  # file, folder, each model's answer
    thumbnails: dict[str, Any] = field(default_factory=dict, repr=False)  # file -> small image
    notes: list[str] = field(default_factory=list)

    def table(self) -> list[dict[str, Any]]:
        return [{"model": name, "accuracy": None if e.accuracy is None else round(e.accuracy, 4),
                 "images": sum(r.answered for r in e.rows), "images/s": round(e.images_per_s, 2),
                 "ms per image": round(e.ms_per_image, 2), "engine": e.engine,
                 "macro F1": None if e.results is None else round(e.results.macro_f1, 4)}
                for name, e in self.evaluations.items()]

    def summary(self) -> str:
        names = list(self.evaluations)
        text = []
        if self.shared_classes is not None:
            text.append(f"The models have different classes: compared on the {len(self.shared_classes)} they share"
                        + (f" ({', '.join(self.shared_classes[:20])}{' ...' if len(self.shared_classes) > 20 else ''})"
                           if self.shared_classes else " (none: no answer can be compared)") + ".")
        if self.agreement is not None:
            text.append(f"**{' and '.join(names)} agree on {self.agreement:.1%}** of the images; "
                        f"{len(self.disagreements)} differ.")
        for name, e in self.evaluations.items():
            text.append(f"{name}: " + (f"accuracy {e.accuracy:.2%}" if e.accuracy is not None
                                       else f"no accuracy ({e.no_accuracy})") +
                        f", {e.images_per_s:.1f} images/s ({e.engine}).")
        return " ".join(text + self.notes)

    def gallery(self) -> list[tuple[Any, str]]:
        return [(self.thumbnails[d["file"]], " · ".join(f"{m}: {d[m]}" for m in self.evaluations)
                 + (f" · true: {d['folder']}" if d.get("folder") else "") + f" · {d['file']}")
                for d in self.disagreements if d["file"] in self.thumbnails]

    def to_dict(self) -> dict[str, Any]:
        return {"models": self.table(), "agreement": self.agreement, "shared_classes": self.shared_classes,
                "disagreements": self.disagreements, "notes": self.notes,
                "evaluations": {n: {k: v for k, v in e.to_dict().items() if k != "rows"}
                                for n, e in self.evaluations.items()}}


def compare_on_data(
    models: Sequence[str | os.PathLike | Predictor],
    data: Any,
    *,
    tta: bool = False,
    stop: threading.Event | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> SetComparison:
    """Evaluate each of ``models`` on ``data`` in turn (each on its own engine, timed end to end from the file's
    bytes), then compare their answers image by image."""
    predictors = [m if isinstance(m, Predictor) else Predictor(m) for m in models]
    plan = data if isinstance(data, StreamPlan) else plan_stream(data if isinstance(data, list) else [data])
    names = _unique_names([p.name for p in predictors])
    label_sets = [set(p.labels) for p in predictors]
    shared = None
    if any(s != label_sets[0] for s in label_sets[1:]):
        common = set.intersection(*label_sets)
        shared = [label for label in predictors[0].labels if label in common]
    evaluations: dict[str, Evaluation] = {}
    notes = []
    for name, predictor in zip(names, predictors):
        if shared is not None and not shared:
            break
        report = (lambda rows, done, total, n=name: on_progress(n, done, total)) if on_progress else None
        evaluations[name] = evaluate(predictor, plan, tta=tta, stop=stop, on_rows=report, restrict_to=shared)
    if shared is not None and not shared:
        notes.append(f"{' and '.join(names)} share no class: their answers cannot be compared")
        return SetComparison({}, shared, None, [], {}, notes)
    return _compared(evaluations, shared, notes, plan)


def _compared(evaluations: dict[str, Evaluation], shared, notes, plan) -> SetComparison:
    names = list(evaluations)
    rows = [e.rows for e in evaluations.values()]
    n = min(len(r) for r in rows)
    both = [i for i in range(n) if all(r[i].answered for r in rows)]
    differ = [i for i in both if len({r[i].predicted for r in rows}) > 1]
    agreement = 1 - len(differ) / len(both) if both else None
    disagreements = [{"file": rows[0][i].file, "folder": rows[0][i].folder,
                      **{m: f"{r[i].predicted} ({r[i].confidence:.0%})" for m, r in zip(names, rows)}} for i in differ]
    thumbnails = _disagreement_thumbnails([d["file"] for d in disagreements[:MAX_DISAGREEMENTS_SHOWN]],
                                          plan)
    return SetComparison(evaluations, shared, agreement, disagreements, thumbnails, notes)


def _disagreement_thumbnails(files: list[str], plan: StreamPlan, side: int = 160) -> dict[str, Any]:
    """Small copies of the images the models disagree on, read again from the set (a few dozen at most)."""
    from .images import load_image

    wanted, out = set(files), {}
    for entry in plan.entries:
        if entry.name not in wanted:
            continue
        try:
            image = load_image(entry.read(), name=entry.name, draft=side)
        except Exception:  # noqa: BLE001 - an image that fails now is not shown; its row said why
            continue
        image.thumbnail((side, side))
        if max(image.size) < 96:  # a 28 px digit: enlarged, pixels kept sharp, as the fine-tune's mistakes are
            scale = 96 // max(image.size)
            image = image.resize((image.width * scale, image.height * scale), resample=0)
        out[entry.name] = image
    return out
