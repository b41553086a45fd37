"""The command line's batch commands: ``classify`` of many images (files, folders, zips) to a table or CSV,
``evaluate MODEL DATA``, ``compare --data SET`` and ``bench-batch``. Wired into ``resnet_hub.__main__``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .errors import DataError
from .tables import print_table


def add_classify_batch_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, metavar="PATH",
                   help="a file, folder or zip of images (flat, or one folder per class): the same as giving it as "
                        "IMAGE; the two are exclusive")
    p.add_argument("--csv", default=None, metavar="FILE",
                   help="also write one row per image (file, folder, top-1, confidence, top-k, error) to FILE")
    add_min_confidence(p)
    add_tta(p)


def add_min_confidence(p: argparse.ArgumentParser) -> None:
    p.add_argument("--min-confidence", type=float, default=None, metavar="X",
                   help="below this top-1 probability (0-1) the answer is 'not sure', with the top guesses shown "
                        "(default: off)")


def add_tta(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average each photo with its left-right mirror image (photo models "
                        "only: a flipped digit is another shape); about twice the forward time")


def inputs(args: argparse.Namespace, positional: str) -> list[str]:
    """The positional inputs or ``--data``, never both."""
    given = getattr(args, positional) or []
    if isinstance(given, str):
        given = [given]
    if args.data is not None and given:
        raise DataError(f"give the images either as arguments or with --data, not both (got {given[0]!r} and "
                        f"--data {args.data!r})")
    if args.data is not None:
        return [args.data]
    if not given:
        raise DataError("no images: give image files, folders or zips, or --data PATH")
    return list(given)


def check_given(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """classify and compare with no image and no --data: a usage error, as argparse says its own."""
    given = {"classify": "images", "compare": "image"}.get(getattr(args, "command", None))
    if given and not getattr(args, given) and args.data is None:
        parser.error(f"{args.command}: give an IMAGE (a file, folder or zip) or --data PATH")


def is_batch(paths: list[str], args: argparse.Namespace) -> bool:
    """One image file answers as before (an unreadable one is the command's error); anything more is a batch,
    where a bad image is a row with its error."""
    if args.data is not None or getattr(args, "csv", None) is not None or getattr(args, "tta", False) or len(paths) != 1:
        return True
    path = Path(paths[0])
    return path.is_dir() or path.suffix.lower() == ".zip"


def classify(args: argparse.Namespace, paths: list[str], make_registry) -> dict[str, Any]:
    from .batch import check_min_confidence, classify_batch
    from .image_stream import plan_stream

    min_confidence = check_min_confidence(args.min_confidence)
    plan = plan_stream(paths)  # a missing path or an unsafe zip is said before any model is loaded
    predictor = make_registry().predictor(args.model)
    if args.top_k is not None:
        predictor._check_top_k(args.top_k)
    for note in predictor.notes:
        print(f"note: {note}", file=sys.stderr)
    bar = _Bar(enabled=not args.json)
    result = classify_batch(predictor, plan, top_k=args.top_k, min_confidence=min_confidence, tta=args.tta,
                            csv=args.csv, on_rows=bar)
    bar.close()
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if not args.json:
        for row in result.rows:
            if not row.answered:
                print(f"{row.file}: error: {row.error}")
                continue
            print(f"{row.file}:" + not_sure_text(row.confidence, min_confidence))
            for label, p in row.top_k:
                print(f"  {p:7.2%}  {label}")
        print(_said(result), file=sys.stderr)
    report = result.to_dict()
    report.update(device=str(predictor.device), precision=predictor.precision, csv=args.csv,
                  results={r.file: dict(r.top_k) for r in result.rows if r.answered},
                  failed={r.file: r.error for r in result.rows if not r.answered})
    return report


def _said(result) -> str:
    d = result.to_dict()
    text = f"{d['answered']} of {d['images']} images answered in {d['seconds']:.1f} s ({d['images_per_s']:.1f} images/s)"
    if d["errors"]:
        text += f"; {d['errors']} could not be read"
    if d["not_sure"]:
        text += f"; {d['not_sure']} not sure"
    skipped = sum(len(v) for v in d["skipped"].values())
    return text + (f"; skipped {skipped} files that are not images" if skipped else "")


def not_sure_text(top_probability: float, min_confidence: float | None) -> str:
    """What follows a single image's name when its answer falls below the threshold (empty: it does not)."""
    from .batch import NOT_SURE

    if min_confidence is None or top_probability >= min_confidence:
        return ""
    return f" {NOT_SURE} (below {min_confidence:.0%}); top guesses:"


def add_evaluate_parser(sub, add_common) -> argparse.ArgumentParser:
    p = sub.add_parser("evaluate", help="how a model does on a labelled set (a zip or folder of class folders)",
                       description="Accuracy, per-class precision/recall/F1 (scikit-learn), the confusion matrix and "
                                   "the mistakes of MODEL on DATA, whose folder names are matched to the model's "
                                   "classes: exact, then ignoring case and separators. Folders naming no class are "
                                   "answered, not scored. For a model fine-tuned here, says how many of the images "
                                   "it trained on.")
    p.add_argument("model", metavar="MODEL", help="anything classify's --model accepts")
    p.add_argument("data", metavar="DATA", help="a zip or folder with one folder of images per class")
    p.add_argument("--top-k", type=int, default=None, help="labels per image in the rows (default: 5)")
    add_tta(p)
    p.add_argument("--csv", default=None, metavar="FILE", help="also write the rows to FILE")
    add_common(p, model=False)
    return p


def evaluate(args: argparse.Namespace, make_registry) -> dict[str, Any]:
    from .batch import write_csv
    from .evaluation import evaluate as run
    from .image_stream import plan_stream

    plan = plan_stream([args.data])  # a missing path or an unsafe zip is said before any model is loaded
    predictor = make_registry().predictor(args.model)
    bar = _Bar(enabled=not args.json)
    result = run(predictor, plan, top_k=args.top_k, tta=args.tta, on_rows=bar)
    bar.close()
    if args.csv:
        write_csv(result.rows, args.csv)
    if not args.json:
        print(result.summary().replace("**", ""))
        if result.results is not None:
            print("\nPer class:")
            print_table(result.results.per_class)
            print("\nConfusion matrix (rows: true class, columns: predicted):")
            classes = result.results.classes
            print_table([{"true \\ predicted": c, **dict(zip(classes, row))}
                         for c, row in zip(classes, result.results.confusion_matrix)])
            mistakes = result.results.all_mistakes[:10]
            if mistakes:
                print(f"\nMost confident mistakes ({len(mistakes)} of {len(result.results.all_mistakes)}):")
                print_table([m.to_dict(classes) for m in mistakes])
    out = result.to_dict()
    out.pop("rows")
    out["rows"] = [r.to_dict() for r in result.rows] if args.json else None
    return out


def compare_set(args: argparse.Namespace, paths: list[str], make_registry) -> dict[str, Any]:
    from .image_stream import plan_stream
    from .set_comparison import compare_on_data

    plan = plan_stream(paths)
    registry = make_registry()
    predictors = [registry.predictor(m) for m in args.models]
    result = compare_on_data(predictors, plan, tta=args.tta)
    if not args.json:
        print(result.summary().replace("**", ""))
        print()
        print_table(result.table())
        if result.disagreements:
            print(f"\nWhere they disagree ({len(result.disagreements)}):")
            print_table(result.disagreements[:20])
    return result.to_dict()


def add_bench_batch_parser(sub, add_common) -> None:
    p = sub.add_parser("bench-batch", help="batch classify images/s against bench's batch-32 JPEG -> top-5 figure",
                       description="Writes N real photos as JPEG files (half 2,048 px wide, half 512 px, as bench "
                                   "does), zips them, then measures in one run, for each model: bench's end-to-end "
                                   "figure (Predictor.classify of a batch of JPEG files -> top-5) and batch "
                                   "classification of the zip (streamed, per-image errors, rows), on the engine "
                                   "this machine chooses. Goal: batch >= 0.8x.")
    p.add_argument("--models", nargs="+", default=["resnet18", "resnet50"], help="(default: %(default)s)")
    p.add_argument("--images", type=int, default=256, help="images in the zip (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="bench's batch (default: %(default)s)")
    p.add_argument("--runs", type=int, default=3, help="timed runs of each (default: %(default)s)")
    add_common(p, model=False)
    p.set_defaults(run=lambda args: bench_batch(args))


def bench_batch(args: argparse.Namespace) -> dict[str, Any]:
    from .bench_batch import run_bench_batch

    report = run_bench_batch(args.models, images=args.images, batch_size=args.batch_size, runs=args.runs,
                             device=args.device, log=None if args.json else print)
    if not args.json:
        print_table(report["rows"])
        for note in report["notes"]:
            print(f"note: {note}")
    return report


class _Bar:
    """A tqdm bar over the images of a batch (on stderr)."""

    def __init__(self, enabled: bool):
        self.enabled, self.bar = enabled, None

    def __call__(self, rows, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, unit="image", dynamic_ncols=True, file=sys.stderr)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
