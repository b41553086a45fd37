"""``python -m resnet_hub inspect ...`` and ``finetune --drop-flagged``: the data inspection on the command line.

Nothing here imports torch at import time: ``--help`` stays fast. The inspection lives in :mod:`resnet_hub.inspection`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .tables import print_table

MAX_LISTED = 20  # of each finding, in the table output (--json has them all)


def add_inspect_parser(sub) -> None:
    """Register ``inspect`` on an ``add_subparsers()`` object."""
    p = sub.add_parser(
        "inspect", help="find wrong labels, copies, outliers and imbalance in a zip of class folders",
        description="Inspect a data set before training on it, on the embeddings of the base a fine-tune would start "
                    "from: probably mislabelled images (cleanlab on cross-validated logistic regression), exact and "
                    "near copies (and whether they span classes or the training/validation split), outliers, the "
                    "files the zip reader refused, and the balance of the classes.",
    )
    p.add_argument("--data", required=True, help="a .zip with one folder per class, or 'mnist-sample' (bundled)")
    p.add_argument("--base", default="resnet18",
                   help="whose embeddings: a short name, a model of the store (NAME or local:NAME), a Hub id, a "
                        "folder, or scratch:ARCH (default: %(default)s)")
    p.add_argument("--image-size", type=int, default=None, help="input size in px (default: the base's)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(run=run_inspect)

    b = sub.add_parser("bench-inspect", help="time an inspection of 1,000 photos, and the fine-tune that reads it",
                       description="Inspect 1,000 photos at 128 px on a random-weight ResNet-18 (first with the engine "
                                   "not yet converted, then with it in the engine cache), then a head-only fine-tune "
                                   "that reads the inspection's embeddings, against one that computes them.")
    b.add_argument("--images", type=int, default=1000)
    b.add_argument("--image-size", type=int, default=128)
    b.add_argument("--arch", default="resnet18")
    b.add_argument("--json", action="store_true", help="print machine-readable JSON")
    b.set_defaults(run=run_bench_inspect)


def run_bench_inspect(args: argparse.Namespace) -> dict[str, Any]:
    from .bench_inspect import run_inspect_bench

    report = run_inspect_bench(args.images, args.image_size, args.arch, log=None if args.json else print)
    if not args.json:
        print(f"\n{report['cpu']}, {report['threads']} threads: {report['images']} photos at {report['image_size']} px, "
              f"{report['arch']} (random weights)")
        print_table(report["rows"])
    return report


def run_inspect(args: argparse.Namespace) -> dict[str, Any]:
    from tqdm import tqdm

    from .cli_common import resolved_base
    from .inspection import inspect, read_for_inspection

    dataset = read_for_inspection(args.data)  # bad data is said before a base is fetched or a starter built
    base = resolved_base(args.base, args.json)
    bar = tqdm(total=100, desc="inspecting", unit="%", disable=args.json, file=sys.stderr,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining} {postfix}")

    def progress(fraction: float, what: str) -> None:
        bar.n = round(100 * fraction)
        bar.set_postfix_str(what, refresh=True)

    try:
        found = inspect(dataset, base=base, image_size=args.image_size, on_progress=progress)
    finally:
        bar.close()
    found.base = args.base  # as the user named it, not where it sits on this machine
    if not args.json:
        print_found(found)
    return found.to_dict()


def print_found(found) -> None:
    print(found.summary())
    if found.warning:
        print(f"warning: {found.warning}")
    print(f"balance: {found.balance}")
    print_table([{"class": c, "images": n} for c, n in found.classes.items()])
    if found.label_issues:
        print(f"\nProbably mislabelled ({len(found.label_issues)}, most likely first):")
        print_table([{"image": i.path, "given": i.given, "looks like": i.suggested, "confidence": f"{i.confidence:.0%}"}
                     for i in found.label_issues[:MAX_LISTED]])
    if found.duplicates:
        print(f"\nCopies ({len(found.duplicates)} groups):")
        print_table([{"images": ", ".join(g.paths), "kind": "exact" if g.exact else "near",
                      "across classes": "yes" if g.across_classes else "", "across split": "yes" if g.across_split
                      else ""} for g in found.duplicates[:MAX_LISTED]])
    if found.outliers:
        print(f"\nOutliers ({len(found.outliers)}, strangest first):")
        print_table([{"image": o.path, "score": f"{o.score:.1f}"} for o in found.outliers[:MAX_LISTED]])
    for reason, names in found.skipped.items():
        if names and reason != "junk":
            print(f"\nNot read ({reason}): " + ", ".join(names[:MAX_LISTED]) + (" ..." if len(names) > MAX_LISTED else ""))
    for note in found.notes + ([found.embedding_note] if found.embedding_note else []):
        print(f"note: {note}")


def drop_flagged(dataset, base: str, image_size: int | None, quiet: bool):
    """``finetune --drop-flagged``: inspect on the run's own base and size, and drop what was flagged."""
    from .inspection import drop_flagged as dropped, inspect

    found = inspect(dataset, base=base, image_size=image_size)
    cleaned, counts = dropped(found)
    if not quiet:
        print(f"--drop-flagged: {', '.join(f'{n} {what}' for what, n in counts.items())}; "
              f"{len(cleaned):,} of {len(dataset):,} images left", file=sys.stderr)
    return cleaned, counts
