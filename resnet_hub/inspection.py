"""What a data set holds before it is trained on: probably wrong labels, copies, outliers and balance.

Everything but the copies is read off the base's embeddings (:mod:`resnet_hub.embeddings`), the same numbers a
head-only fine-tune on that base trains on, so the fine-tune that follows reads them from the cache:

- label issues: out-of-fold probabilities of a logistic regression on the embeddings (scikit-learn), given to
  cleanlab's ``find_label_issues`` (Northcutt et al., "Confident learning", JAIR 2021);
- copies: the same pixels, or a near copy by the pixels themselves (:mod:`resnet_hub.copies`), never by the
  embedding, which puts every 7 of a digit set close together;
- outliers: cleanlab's ``OutOfDistribution`` score (mean distance to the k nearest images), flagged where it stands
  far above the set's own spread;
- balance: images per class, and what the training does about it.

>>> found = inspect("pets.zip", base="resnet18")                           # doctest: +SKIP
>>> [(i.given, i.suggested) for i in found.label_issues][:1]               # doctest: +SKIP
[('cats', 'dogs')]
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import copies
from .data import ImageDataset, ZipLimits, load_dataset, stratified_split
from .embeddings import embed, image_key, whole_trunk
from .errors import ResNetHubError
from .finetune_config import FinetuneConfig
from .weights import HubResNet, create, load

# A zip read for inspection keeps what training would refuse: one class, a class of one image.
INSPECTION_LIMITS = ZipLimits(min_classes=1, min_per_class=1)
FOLDS = 5  # cross-validation folds for the out-of-fold probabilities (fewer when the smallest class is smaller)
PCA_COMPONENTS = 64  # of the embedding, for the label check's regression
# The regression's inverse regularisation: on held-out digits with 10% planted wrong labels and the digit starter,
# C = 0.03 flagged with 98% precision at 85-95% recall over three seeds, C = 0.1 with 90-94% (docs/benchmarks.md).
LABEL_CHECK_C = 0.03
OUTLIER_NEIGHBOURS = 10  # cleanlab's k
OUTLIER_MIN_Z = 4.0  # flagged: this many robust standard deviations (1.4826 MAD) above the set's median score
IMBALANCE_RATIO = 3.0  # largest class / smallest above this: said


class InspectionError(ResNetHubError, ValueError):
    """The inspection cannot run on this input (the message says why and what to do)."""


@dataclass
class LabelIssue:
    index: int
    path: str
    given: str
    suggested: str
    confidence: float  # the out-of-fold probability of the suggested class

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "given": self.given, "suggested": self.suggested,
                "confidence": round(self.confidence, 4)}


@dataclass
class CopyGroup:
    indices: list[int]
    paths: list[str]
    exact: bool  # every image has the same pixels
    across_classes: bool
    across_split: bool  # the fine-tune's plain stratified split would put them on both sides

    def to_dict(self) -> dict[str, Any]:
        return {"paths": self.paths, "exact": self.exact, "across_classes": self.across_classes,
                "across_split": self.across_split}


@dataclass
class Outlier:
    index: int
    path: str
    score: float  # robust z of the distance to the nearest images: higher is stranger

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "score": round(self.score, 2)}


@dataclass
class Inspection:
    """What :func:`inspect` found in a data set. ``to_dict`` is the CLI's ``--json``."""

    name: str
    base: str
    image_size: int
    classes: dict[str, int]
    label_issues: list[LabelIssue]
    duplicates: list[CopyGroup]
    outliers: list[Outlier]
    skipped: dict[str, list[str]]
    balance: str
    notes: list[str]
    warning: str  # the base does not fit the data: its findings mean little
    seconds: float
    embedding_note: str = ""
    reused: int = 0  # embeddings read from the cache
    dataset: ImageDataset | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "base": self.base, "image_size": self.image_size, "classes": self.classes,
            "label_issues": [i.to_dict() for i in self.label_issues],
            "duplicates": [g.to_dict() for g in self.duplicates],
            "outliers": [o.to_dict() for o in self.outliers],
            "skipped": self.skipped, "balance": self.balance, "notes": self.notes, "warning": self.warning,
            "seconds": round(self.seconds, 2), "embedding": self.embedding_note, "embeddings_reused": self.reused,
        }

    def summary(self) -> str:
        """One line for people."""
        n = sum(self.classes.values())
        n_skipped = sum(len(v) for v in self.skipped.values())
        across = sum(g.across_split for g in self.duplicates)
        return (f"{self.name}: {n:,} images in {len(self.classes)} class{'es' * (len(self.classes) != 1)}; "
                f"{len(self.label_issues)} probably mislabelled, {len(self.duplicates)} copy group"
                f"{'s' * (len(self.duplicates) != 1)}" + (f" ({across} across the split)" if across else "")
                + f", {len(self.outliers)} outlier{'s' * (len(self.outliers) != 1)}"
                + (f", {n_skipped} file{'s' * (n_skipped != 1)} not read" if n_skipped else "")
                + f" ({self.seconds:.1f} s)")

    def flagged(self) -> dict[str, set[int]]:
        """What ``finetune --drop-flagged`` drops: every label issue, all but the first image of each copy group,
        every outlier (indices into the data set)."""
        return {"label_issues": {i.index for i in self.label_issues},
                "copies": {i for g in self.duplicates for i in g.indices[1:]},
                "outliers": {o.index for o in self.outliers}}


Progress = Callable[[float, str], None]


def read_for_inspection(data: Any, **kw: Any) -> ImageDataset:
    """An :class:`ImageDataset` from what :func:`inspect` accepts: one already read, ``"mnist-sample"``, or the path
    or bytes of a zip of class folders, read with :data:`INSPECTION_LIMITS` (one class is enough here)."""
    if isinstance(data, ImageDataset):
        return data
    if isinstance(data, (bytes, bytearray, memoryview)):
        from .data import read_zip

        return read_zip(data, limits=INSPECTION_LIMITS, **kw)
    text = os.fspath(data) if isinstance(data, (str, os.PathLike)) else ""
    if text.strip().lower().endswith(".zip"):
        kw.setdefault("limits", INSPECTION_LIMITS)
    return load_dataset(data, **kw)


def base_model(base: str, image_size: int | None, dataset: ImageDataset) -> tuple[HubResNet, str]:
    """(the base with every stage frozen, at the fine-tune's image size; a warning when it does not fit the data).
    Messages name a folder by its own name, never by its path on this machine."""
    from .hub import source_label

    name = source_label(base)
    if base.startswith("scratch:"):
        from .finetune import scratch_preprocessing  # the fine-tune's own: the embedding is what it would train on

        model = create(base.split(":", 1)[1], preprocessing=scratch_preprocessing(dataset.kind))
        warning = (f"{base} has random weights: its embedding knows nothing of images yet, so what it flags means "
                   f"little. Inspect with a trained base (a pretrained ResNet, or a model fine-tuned on similar data)")
    else:
        try:
            model = load(base, device="cpu")
        except ResNetHubError as e:
            raise InspectionError(f"cannot compute embeddings with {name!r}: {e}") from None
        base_kind = model.info.training.get("kind")
        warning = ""
        if base_kind == "digits" and dataset.kind != "digits":
            warning = (f"{name} was trained on digits and {dataset.name} holds photos: its embedding tells digits "
                       f"apart, not these classes, so what it flags means little. Inspect with a photo base "
                       f"(resnet18 or resnet50)")
    if image_size is not None:
        model.info.preprocessing = dataclasses.replace(model.info.preprocessing, input_size=image_size)
    return whole_trunk(model), warning


def inspect(
    data: Any,
    base: str = FinetuneConfig.base,
    image_size: int | None = None,
    *,
    precision: str = "auto",
    engine: str = "auto",
    should_stop: Callable[[], str] | None = None,
    on_progress: Progress | None = None,
    model: HubResNet | None = None,
) -> Inspection:
    """Inspect ``data`` (a zip of class folders, ``"mnist-sample"``, or an :class:`ImageDataset`) on ``base``'s
    embeddings at ``image_size`` px (default: the base's own). ``should_stop`` returning a reason ends it with
    :class:`InspectionStopped`; ``on_progress(fraction, what)`` follows it. ``model``: the base already loaded
    (every stage frozen), as the app passes it.
    """
    start = time.perf_counter()
    report = on_progress or (lambda fraction, what: None)
    dataset = read_for_inspection(data)
    if len(dataset) == 0:
        raise InspectionError(f"{dataset.name} holds no image to inspect: put images in class folders and zip them")
    warning = ""
    if model is None:
        model, warning = base_model(base, image_size, dataset)
    report(0.0, "hashing the images")
    keys = [image_key(im) for im in dataset.images]
    report(0.02, f"embedding {len(dataset):,} images")

    started = time.perf_counter()

    def embedded(done: int, total: int) -> None:
        elapsed = time.perf_counter() - started
        left = f", about {elapsed / done * (total - done):.0f} s left" if 0 < done < total else ""
        report(0.02 + 0.78 * done / max(total, 1), f"embedded {done:,} of {total:,} images{left}")

    found = embed(model, dataset.images, dataset.kind, keys=keys, precision=precision, engine=engine,
                  should_stop=should_stop, on_progress=embedded)
    if isinstance(found, str):
        raise InspectionStopped(found)
    vectors = found.vectors.numpy()
    notes: list[str] = []
    report(0.8, "looking for copies")
    groups = copies.copy_groups(dataset.images, keys)
    report(0.85, "checking the labels")
    label_issues, note = find_label_issues(vectors, dataset)
    notes += [note] if note else []
    report(0.95, "looking for outliers")
    outliers = find_outliers(vectors, dataset)
    _, val = stratified_split(dataset, FinetuneConfig.val_fraction, seed=FinetuneConfig.seed)
    in_val = np.zeros(len(dataset), dtype=bool)
    in_val[val] = True
    duplicates = [CopyGroup(g, [dataset.image_name(i) for i in g], len({keys[i] for i in g}) == 1,
                            len({dataset.targets[i] for i in g}) > 1, bool(in_val[g].any() and not in_val[g].all()))
                  for g in groups]
    if found.reused:
        notes.append(f"{found.reused:,} of {len(dataset):,} embeddings read from the cache")
    report(1.0, "done")
    from .hub import source_label

    return Inspection(dataset.name, source_label(base), model.preprocessing.input_size, dataset.counts(), label_issues, duplicates,
                      outliers, dataset.skipped, balance(dataset), notes, warning, time.perf_counter() - start,
                      found.note, found.reused, dataset)


class InspectionStopped(ResNetHubError):
    """The inspection was stopped (by the user, or the app's shutdown)."""


def find_label_issues(vectors: np.ndarray, dataset: ImageDataset) -> tuple[list[LabelIssue], str]:
    """(probably mislabelled images, most likely first; a note on what could not be checked)."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    cleanlab = _cleanlab()
    targets = np.asarray(dataset.targets)
    counts = np.bincount(targets, minlength=len(dataset.classes))
    if len(dataset.classes) < 2:
        return [], (f"label issues need at least two classes and {dataset.name} has one: copies, outliers and "
                    f"balance are still checked")
    # Cross-validation needs every class in every fold: a class with a single image cannot be checked.
    checked_classes = [c for c in range(len(dataset.classes)) if counts[c] >= 2]
    note = ""
    if len(checked_classes) < len(dataset.classes):
        alone = [dataset.classes[c] for c in range(len(dataset.classes)) if counts[c] < 2]
        note = (f"label check skipped for {', '.join(repr(c) for c in alone)}: cross-validation needs at least 2 "
                f"images a class")
    if len(checked_classes) < 2:
        return [], note or "label issues need two classes of at least 2 images"
    rows = np.flatnonzero(np.isin(targets, checked_classes))
    remap = {c: i for i, c in enumerate(checked_classes)}
    y = np.array([remap[t] for t in targets[rows]])
    folds = int(min(FOLDS, counts[checked_classes].min()))
    if folds < FOLDS:
        note = "; ".join(filter(None, [note, f"{folds}-fold cross-validation: the smallest class has {folds} images "
                                             f"({FOLDS} folds need {FOLDS})"]))
    # Standardised, then the leading components only: the regression converges in a tenth of the time on a few
    # hundred numbers a row instead of 512 or 2,048, and finds the same images (docs/benchmarks.md).
    components = min(PCA_COMPONENTS, len(rows) * (folds - 1) // folds, vectors.shape[1])
    classifier = make_pipeline(StandardScaler(), PCA(components, random_state=0),
                               LogisticRegression(max_iter=1000, C=LABEL_CHECK_C))
    probs = cross_val_predict(classifier, vectors[rows], y, cv=StratifiedKFold(folds, shuffle=True, random_state=0),
                              method="predict_proba")
    ranked = cleanlab.filter.find_label_issues(y, probs, return_indices_ranked_by="self_confidence")
    issues = []
    for r in ranked:
        suggested = int(probs[r].argmax())
        if suggested == y[r]:
            continue  # flagged as noise, but its most likely class is its own: nothing to suggest
        index = int(rows[r])
        issues.append(LabelIssue(index, dataset.image_name(index), dataset.classes[targets[index]],
                                 dataset.classes[checked_classes[suggested]], float(probs[r, suggested])))
    return issues, note


def find_outliers(vectors: np.ndarray, dataset: ImageDataset) -> list[Outlier]:
    """Images far from all the others in embedding space, strangest first."""
    cleanlab = _cleanlab()
    if len(vectors) < 3:
        return []
    k = min(OUTLIER_NEIGHBOURS, len(vectors) - 1)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.maximum(norms, 1e-12)
    ood = cleanlab.outlier.OutOfDistribution(params={"k": k})
    with contextlib.redirect_stdout(io.StringIO()):  # cleanlab prints as it fits: not into the CLI's JSON
        fitted = ood.fit_score(features=unit)
    score = -np.log(np.clip(fitted, 1e-12, 1))  # cleanlab: exp(-mean distance); higher is stranger
    median = np.median(score)
    spread = 1.4826 * np.median(np.abs(score - median)) or 1e-12
    z = (score - median) / spread
    order = np.argsort(-z)
    return [Outlier(int(i), dataset.image_name(int(i)), float(z[i])) for i in order if z[i] > OUTLIER_MIN_Z]


def balance(dataset: ImageDataset) -> str:
    """How balanced the classes are, and what the fine-tune does about it."""
    counts = dataset.counts()
    if len(counts) < 2:
        return "one class: nothing to balance"
    low, high = min(counts.values()), max(counts.values())
    smallest = [c for c, n in counts.items() if n == low]
    ratio = high / max(low, 1)
    what = ("the fine-tune does not reweight classes: its split keeps each class's share in validation, and the "
            "results show each class's recall")
    if ratio <= IMBALANCE_RATIO:
        return f"balanced enough: {low:,} to {high:,} images a class ({ratio:.1f}x); {what}"
    return (f"imbalanced: the largest class has {ratio:.1f}x the images of the smallest ({', '.join(smallest[:3])}: "
            f"{low:,}); {what}. Add images to the small classes, or expect lower recall there")


def _cleanlab():
    try:
        import cleanlab.filter
        import cleanlab.outlier
    except ImportError:
        raise InspectionError("the inspection needs cleanlab: pip install 'resnet-hub[inspect]'") from None
    return cleanlab



# ---------------------------------------------------------------------------
# Fixing what was found

DROP, MOVE, KEEP = "drop", "move", "keep"


def fixed(dataset: ImageDataset, drop: set[int] = frozenset(), move: dict[int, str] | None = None,
          groups: list[list[int]] | None = None, counts: dict[str, int] | None = None) -> ImageDataset:
    """A copy of ``dataset`` without the images ``drop`` and with the images ``move`` filed under another of its
    classes; ``groups`` (an inspection's copy groups) are carried over so the fine-tune's split keeps them
    together. ``counts`` (default: images dropped and moved) is what the card records: never file names."""
    move = {i: c for i, c in (move or {}).items() if i not in drop}
    unknown = sorted({c for c in move.values() if c not in dataset.classes})
    if unknown:
        raise InspectionError(f"cannot move images to {', '.join(map(repr, unknown))}: not a class of "
                              f"{dataset.name} ({', '.join(dataset.classes)})")
    keep = [i for i in range(len(dataset)) if i not in drop]
    targets = [dataset.classes.index(move[i]) if i in move else dataset.targets[i] for i in keep]
    present = sorted(set(targets))
    classes = [dataset.classes[c] for c in present]  # a class left with no image is no longer one
    remap = {c: n for n, c in enumerate(present)}
    new_index = {old: new for new, old in enumerate(keep)}
    carried = None
    if groups is not None:
        carried = [g for g in ([new_index[i] for i in g if i in new_index] for g in groups) if len(g) > 1]
    changes = counts if counts is not None else {"images dropped": len(drop), "labels moved": len(move)}
    return ImageDataset([dataset.images[i] for i in keep], [remap[t] for t in targets], classes,
                        dataset.name, dict(dataset.skipped), dataset.kind,
                        [dataset.image_name(i) for i in keep], {k: v for k, v in changes.items() if v}, carried)


def drop_flagged(found: Inspection) -> tuple[ImageDataset, dict[str, int]]:
    """(the set without every flagged image, how many of each kind were dropped): what ``finetune --drop-flagged``
    trains on. An image flagged twice is counted once, under the first kind (label issues, copies, outliers)."""
    if found.dataset is None:
        raise InspectionError("this inspection no longer holds its images: inspect the data again")
    dropped: set[int] = set()
    counts: dict[str, int] = {}
    for what, indices in found.flagged().items():
        counts[f"{what.replace('_', ' ')} dropped"] = len(indices - dropped)
        dropped |= indices
    groups = [g.indices for g in found.duplicates]
    return fixed(found.dataset, dropped, groups=groups, counts=counts), counts


def write_zip(dataset: ImageDataset, path: str | os.PathLike) -> None:
    """Save ``dataset`` as a zip of class folders (PNG, as the images were read: at most the zip reader's side),
    written to a temporary name and renamed."""
    import io
    import zipfile

    from . import atomic

    out = io.BytesIO()
    used: set[str] = set()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for i, image in enumerate(dataset.images):
            stem = os.path.splitext(dataset.image_name(i).replace("\\", "/").rsplit("/", 1)[-1])[0] or f"image{i}"
            name = f"{dataset.classes[dataset.targets[i]]}/{stem}.png"
            n = 2
            while name in used:
                name, n = f"{dataset.classes[dataset.targets[i]]}/{stem}-{n}.png", n + 1
            used.add(name)
            png = io.BytesIO()
            image.save(png, format="PNG")
            archive.writestr(name, png.getvalue())
    atomic.write_bytes(path, out.getvalue())
