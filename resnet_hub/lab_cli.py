"""``python -m resnet_hub why-residual ...``: the "Why residual?" lab on the command line.

Nothing here imports torch at import time: ``--help`` stays fast. The experiments live in :mod:`resnet_hub.lab`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .tables import print_table

CHOICES = ("degradation", "gradients", "plain-vs-resnet", "all")


def add_why_residual_parser(sub) -> None:
    """Register ``why-residual`` on an ``add_subparsers()`` object."""
    p = sub.add_parser(
        "why-residual", help="the degradation problem and vanishing gradients, on this project's own blocks",
        description="Plain against residual CIFAR-style nets (He et al. 2015, section 4.2) on the bundled MNIST "
                    "sample: training error by depth (degradation), gradient norms at initialisation (gradients), "
                    "and the plain CNN of the MNIST lesson against a small ResNet (plain-vs-resnet). Without "
                    "options each runs its full settings and keeps the result in the model store; the options "
                    "override those settings where they apply.",
    )
    p.add_argument("experiment", choices=CHOICES, help="which experiment, or all three")
    p.add_argument("--depths", nargs="+", type=int, default=None, metavar="N",
                   help="depths of the form 6n+2 (20, 32, 44, 56, 110); plain-vs-resnet takes one: its ResNet's")
    p.add_argument("--width", type=int, default=None, help="channels of the first stage (the paper's: 16)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (degradation, plain-vs-resnet)")
    p.add_argument("--batch-size", type=int, default=None, help="training batch, or the gradients' one batch")
    p.add_argument("--seeds", nargs="+", type=int, default=None, metavar="SEED",
                   help="initialisation and order seeds; gradients takes one")
    p.add_argument("--train-digits", type=int, default=None, metavar="N",
                   help="train on N of the 4,000 training digits, a fixed random subset (quick trials)")
    p.add_argument("--live", action="store_true", help="start from the short settings (about 90 s each on 2 cores)")
    p.add_argument("--cached", action="store_true", help="print the kept results without running anything")
    p.add_argument("--no-cache", action="store_true", help="do not keep the results in the model store")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print every curve as JSON")
    p.set_defaults(run=_why_residual)


def _settings(experiment: str, args: argparse.Namespace):
    import dataclasses

    from .lab import CACHED_SETTINGS, LIVE_SETTINGS, LabError

    settings = (LIVE_SETTINGS if args.live else CACHED_SETTINGS)[experiment]
    changes: dict[str, Any] = {}
    recipe: dict[str, Any] = {}
    if args.width is not None:
        changes["width"] = args.width
    if experiment == "gradients":
        if args.depths:
            changes["depths"] = tuple(args.depths)
        if args.seeds:
            if len(args.seeds) != 1 and args.experiment == "gradients":
                raise LabError(f"gradients takes one seed (it picks the batch and the weights), got {args.seeds}")
            changes["seed"] = args.seeds[0]
        if args.batch_size is not None:
            changes["batch_size"] = args.batch_size
    else:
        if args.depths and experiment == "degradation":
            changes["depths"] = tuple(args.depths)
        elif args.depths and args.experiment == "plain-vs-resnet":
            if len(args.depths) != 1:
                raise LabError(f"plain-vs-resnet takes one depth (its ResNet's), got {args.depths}")
            changes["resnet_depth"] = args.depths[0]
        if args.seeds:
            changes["seeds"] = tuple(args.seeds)
        for name, value in (("epochs", args.epochs), ("batch_size", args.batch_size),
                            ("train_limit", args.train_digits)):
            if value is not None:
                recipe[name] = value
        if recipe:
            changes["recipe"] = dataclasses.replace(settings.recipe, **recipe)
    settings = dataclasses.replace(settings, **changes)
    settings.validate()
    return settings


def _why_residual(args: argparse.Namespace) -> dict[str, Any]:
    from . import lab

    experiments = lab.EXPERIMENTS if args.experiment == "all" else (args.experiment,)
    if args.cached:
        results = {name: lab.load_cached(name) for name in experiments}
        missing = [name for name, r in results.items() if r is None]
        if missing:
            raise lab.LabError(f"nothing kept yet for {', '.join(missing)}: run `python -m resnet_hub why-residual "
                               f"{missing[0]}` first")
    else:
        settings = {name: _settings(name, args) for name in experiments}  # every one checked before any runs
        results = {}
        for name in experiments:
            results[name] = lab.run_experiment(name, settings[name], on_event=None if args.json else _progress,
                                               device=args.device, cache=not args.no_cache)
    if not args.json:
        for name, result in results.items():
            print(f"\n## {name} ({result.environment.get('cpu')}, {result.environment.get('threads')} threads, "
                  f"{result.seconds:.0f} s)\n")
            if name == "gradients":
                print_table(result.table())
            else:
                print_table(_error_rows(result))
                if result.orderings():
                    print()
                    print_table([{"claim": o["claim"], "holds": {True: "yes", False: "no"}.get(o["holds"], "n/a")}
                                 for o in result.orderings()])
    out: dict[str, Any] = {name: result.to_dict() for name, result in results.items()}
    out["stopped"] = any(r.stopped for r in results.values())
    return out


def _error_rows(result) -> list[dict[str, Any]]:
    """The final training error of each net, seed by seed, as percentages."""
    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2%}"

    rows = []
    for row in result.summary():
        runs = [r for r in result.runs if r.net == row["net"]]
        rows.append({"net": row["net"], "layers": row["layers"], "parameters": f"{row['parameters']:,}",
                     "train error by seed": ", ".join(f"{r.seed}: {pct(r.final_train_error)}" for r in runs),
                     "mean": pct(row["train error (mean)"]), "val accuracy": pct(row["val accuracy (mean)"])})
    return rows


def _progress(event) -> None:
    if event.kind in ("start", "epoch", "net", "done", "stopped"):
        print(f"[{event.progress:4.0%}] {event.message}", file=sys.stderr, flush=True)
