"""The command line: ``python -m resnet_hub {classify,compare,bench,finetune,starter} ...``.

Errors are one line on stderr and a non-zero exit; ``--json`` prints
machine-readable results on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from . import batch_cli
from .errors import ResNetHubError
from .tables import print_table

EXIT_BAD_INPUT = 2
EXIT_STOPPED = 3


def _add_common(p: argparse.ArgumentParser, *, model: bool = True) -> None:
    if model:
        p.add_argument("--model", default="resnet50",
                       help="short name (resnet18, resnet50; offline: the starter digit models), a model in the local store "
                            "(e.g. starter-resnet50-mnist, or a name you fine-tuned in the app), Hub repo id "
                            "(org/name[@rev]) or local folder (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: %(default)s)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16", "int8"],
                   help="auto: the fastest path this machine has that passes its check against fp32 on held-out "
                        "real images (int8 quantizes statically, calibrated on other real images) "
                        "(default: %(default)s)")
    p.add_argument("--engine", default="auto", choices=["auto", "torch", "openvino"],
                   help="auto: any engine (with a named --precision: torch); openvino runs on CPUs; an engine "
                        "that cannot run here falls back to torch and says why (default: %(default)s)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (slow first call, faster after)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of tables")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m resnet_hub", description="Try, compare and fine-tune ResNets.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("classify", help="top-k labels of one or more images",
                       description="Print the top-k labels of each image.")
    p.add_argument("images", nargs="*", metavar="IMAGE",
                   help="image files (JPEG, PNG, WebP, GIF, BMP, TIFF), folders of them, or zips (flat or one folder "
                        "per class); more than one image: a bad one is a row with its error")
    p.add_argument("--top-k", type=int, default=None,
                   help="labels to show per image (default: 5, or every class if the model has fewer)")
    batch_cli.add_classify_batch_arguments(p)
    _add_common(p)
    p.set_defaults(run=_classify)

    p = sub.add_parser("compare", help="one image through several models, with timings",
                       description="Top-k of each model side by side, whether top-1 agrees, and timings.")
    p.add_argument("image", nargs="?", metavar="IMAGE",
                   help="an image, or a labelled set (a zip or folder of class folders): then each model's accuracy, "
                        "agreement, the images they disagree on and images/s")
    p.add_argument("--data", default=None, metavar="PATH", help="the labelled set, instead of IMAGE")
    batch_cli.add_tta(p)
    p.add_argument("--models", nargs="+", default=["resnet18", "resnet50"],
                   help="models to compare: anything --model of classify accepts (default: %(default)s)")
    p.add_argument("--top-k", type=int, default=None,
                   help="labels per model (default: 5, or every class if a model has fewer)")
    p.add_argument("--runs", type=int, default=10, help="timed runs per model after warm-up (default: %(default)s)")
    _add_common(p, model=False)
    p.set_defaults(run=_compare)

    p = sub.add_parser("bench", help="this project's fast path against torchvision's eager fp32 ResNet",
                       description="Latency, throughput and agreement of the fast path against torchvision's eager "
                                   "fp32 ResNet with the same weights and inputs, in one run.")
    p.add_argument("--models", nargs="+", default=["resnet18", "resnet50"], help="models to measure (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="batch for the throughput column (default: %(default)s)")
    p.add_argument("--runs", type=int, default=10, help="timed runs per measurement (default: %(default)s)")
    p.add_argument("--variants", nargs="+", default=None,
                   help="resnet-hub engines to run, e.g. 'openvino int8' 'torch fp32' (default: all that this device runs)")
    _add_common(p, model=False)
    p.set_defaults(run=_bench)

    p = sub.add_parser("bench-finetune", help="fine-tuning against the PyTorch transfer-learning tutorial's loop",
                       description="resnet-hub's fine-tune against the PyTorch transfer-learning tutorial loop "
                                   "(DataLoader over PIL transforms, requires_grad=False on the frozen part, the whole "
                                   "network every step, fp32), same base, photos, split and epochs, in one run: head "
                                   "only, last stage, full fine-tune; then the wall time from a photo zip to a saved "
                                   "ResNet-50 with the default settings.")
    p.add_argument("--arch", default="resnet18", help="model of the comparison rows (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=None, help="(default: the app's default)")
    p.add_argument("--image-size", type=int, default=224, help="(default: %(default)s)")
    p.add_argument("--per-class", type=int, default=25, help="photos per class, 8 classes (default: %(default)s)")
    p.add_argument("--freezes", type=int, nargs="+", default=[4, 3, -1],
                   help="frozen-stage settings to compare (default: %(default)s)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="resnet-hub's autocast; fp32 shows a CPU without bf16 (default: %(default)s)")
    p.add_argument("--wall-arch", default="resnet50", help="model of the wall-time row; 'none' skips it (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(run=_bench_finetune)

    p = sub.add_parser("bench-first-answer", help="the first answer of a model never served here, empty engine cache",
                       description="Time to the first answer of a model never served here (an empty engine cache): "
                                   "the plain torch path answering while the engine is chosen in the background, "
                                   "against choosing it before the first answer; and the warm median of each.")
    p.add_argument("model", metavar="MODEL", help="a saved model: folder, store name or Hub id, e.g. one saved with "
                                                  "`finetune --base scratch:resnet50 --image-size 224`")
    p.add_argument("--runs", type=int, default=20, help="warm runs per median (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(run=_bench_first_answer)

    _add_finetune_parser(sub)
    batch_cli.add_evaluate_parser(sub, _add_common).set_defaults(
        run=lambda args: batch_cli.evaluate(args, lambda: _registry(args, [args.model])))
    batch_cli.add_bench_batch_parser(sub, _add_common)

    p = sub.add_parser("starter", help="train and store the offline starter digit models",
                       description="Train ResNet-18 and ResNet-50 digit classifiers on the bundled MNIST sample "
                                   "(no network) and keep them in the local model store.")
    p.add_argument("--archs", nargs="+", default=["resnet18", "resnet50"], help="which (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="retrain even if already stored")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(run=_starter)

    from .inspect_cli import add_inspect_parser
    from .lab_cli import add_why_residual_parser

    add_inspect_parser(sub)
    add_why_residual_parser(sub)
    return parser


def _add_finetune_parser(sub) -> None:
    from .finetune_config import FinetuneConfig

    d = FinetuneConfig()
    p = sub.add_parser(
        "finetune", help="fine-tune on a zip of class folders or the bundled MNIST sample",
        description="Fine-tune a ResNet and save it in Hub layout. Runs unchanged under "
                    "`torchrun --nproc_per_node=N -m resnet_hub finetune ...` (DistributedDataParallel).",
    )
    p.add_argument("--data", required=True,
                   help="a .zip with one folder per class, 'mnist-sample' (bundled, offline), or 'mnist'/'cifar10' (download)")
    p.add_argument("--limit-per-class", type=int, default=None, metavar="N",
                   help="use only the first N images of each class (mnist-sample only; for quick trials)")
    p.add_argument("--base", default=d.base,
                   help="starting weights: a short name, a model of the store (NAME or local:NAME), a Hub id, a "
                        "folder, or scratch:ARCH (default: %(default)s)")
    p.add_argument("--out", required=True,
                   help="where to save the model: a plain NAME (no '/', not starting with '.') goes into the model "
                        "store the app lists; anything else is a folder (refused if it exists, see --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--epochs", type=int, default=d.epochs, help="passes over the training split (default: %(default)s)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: 0.05 for sgd, 0.001 for adamw)")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="global batch size (default: 64, clipped to the training set; a batch given here is checked)")
    p.add_argument("--optimizer", choices=["sgd", "adamw"], default=d.optimizer, help="(default: %(default)s)")
    p.add_argument("--freeze", type=int, default=d.freeze,
                   help="freeze the stem and the first N stages; -1 trains everything (default: 3 for a pretrained "
                        "base on a small photo set, as the project's seed notes advise for small-sample transfer; "
                        "else -1)")
    p.add_argument("--cached-views", type=int, default=d.cached_views, metavar="N",
                   help="with frozen stages, views per image in the frozen-feature cache: the image as served, then "
                        "augmented copies (default: %(default)s)")
    p.add_argument("--cache-engine", choices=["auto", "torch", "openvino"], default=d.cache_engine,
                   help="what computes the frozen-feature cache: auto uses OpenVINO (int8, else the run's precision) "
                        "on a CPU when the frozen part is already converted for this base or converting pays within "
                        "this run, and its features match torch's fp32 ones; else torch. openvino: convert whatever "
                        "the run's length (default: %(default)s)")
    p.add_argument("--no-cache", action="store_true",
                   help="run the whole network every step even when stages are frozen")
    p.add_argument("--image-size", type=int, default=None, help="training/inference input size in px (default: the base's)")
    p.add_argument("--crop-pct", type=float, default=None,
                   help="share of the resized image the centre crop keeps, 0.5-1 (default: the base's; "
                        "from scratch 1.0 for digits, 0.875 for photos)")
    p.add_argument("--clean-epochs", type=int, default=d.clean_epochs, metavar="N",
                   help="train the last N epochs on un-augmented images, as the model will see them (default: %(default)s)")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction, help="held-out share, stratified (default: %(default)s)")
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing, help="(default: %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="split, order and initialisation seed (default: %(default)s)")
    p.add_argument("--time-budget", type=float, default=None,
                   help="stop after this many seconds; what was learned by then is saved, marked as stopped")
    p.add_argument("--drop-flagged", action="store_true",
                   help="inspect the data on the base first (see `inspect`) and train without the images it flags: "
                        "probable label issues, all but one image of each copy group, outliers")
    p.add_argument("--onnx", action="store_true",
                   help="also write model.onnx into --out (opset 17, checked against PyTorch with onnxruntime on real "
                        "images); if the exporter fails the safetensors model is still saved")
    p.add_argument("--push-to", default=None, metavar="USER/REPO",
                   help="also push the result to this Hub repo (token from HF_TOKEN or `hf auth login`)")
    p.add_argument("--device", default=d.device, help="auto, cpu or cuda (default: %(default)s)")
    p.add_argument("--precision", default=d.precision, choices=["auto", "fp32", "bf16", "fp16"],
                   help="autocast precision; auto picks bf16 where the hardware runs it fast (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the result as JSON (schedule included)")
    p.set_defaults(run=_finetune)


def _finetune(args: argparse.Namespace) -> dict[str, Any] | None:
    import os

    from .data import MNIST_SAMPLE, load_dataset
    from .errors import DataError, PushError
    from .finetune import FinetuneConfig, finetune
    from .cli_common import resolved_base
    from .hub import parse_repo_id
    from .names import output_folder
    from .trained_on import write_record

    out = output_folder(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"--out {out} already exists: choose another folder or add --overwrite")
    token = None
    if args.push_to:
        from huggingface_hub import get_token

        parse_repo_id(args.push_to, allow_revision=False)  # refused before any training or upload
        token = get_token()
        if not token:
            raise PushError("--push-to needs a Hugging Face token: set HF_TOKEN or run `hf auth login` first")
    config = FinetuneConfig(
        base=args.base, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, optimizer=args.optimizer,
        freeze=args.freeze, image_size=args.image_size, crop_pct=args.crop_pct, val_fraction=args.val_fraction,
        label_smoothing=args.label_smoothing, seed=args.seed, device=args.device, precision=args.precision,
        time_budget_s=args.time_budget, clean_epochs=args.clean_epochs, cached_views=args.cached_views,
        cache_features=not args.no_cache, cache_engine=args.cache_engine,
    )
    limit = {}
    if args.limit_per_class is not None:
        if args.data.strip().lower() != MNIST_SAMPLE:
            raise DataError(f"--limit-per-class applies to {MNIST_SAMPLE} only, not {args.data!r}")
        if args.limit_per_class < 1:
            raise DataError(f"--limit-per-class must be at least 1, got {args.limit_per_class}")
        limit["limit_per_class"] = args.limit_per_class
    dataset = load_dataset(args.data, **limit)  # bad data is said before a base is fetched or a starter built
    if not config.base.startswith("scratch:"):
        config.base = resolved_base(config.base, quiet=args.json)
    dropped = None
    if args.drop_flagged:
        from .inspect_cli import drop_flagged

        dataset, dropped = drop_flagged(dataset, config.base, config.image_size, args.json)
    is_main = int(os.environ.get("RANK", "0")) == 0
    bar = _ProgressBar(enabled=is_main and not args.json)
    result = finetune(dataset, config, on_event=bar)
    bar.close()
    summary: dict[str, Any] = {
        "stopped": result.stopped, "reason": result.reason, "val_accuracy": result.val_accuracy,
        "images_per_s": result.images_per_s, "seconds": result.seconds,
        "steps": sum(e.kind == "step" for e in result.history),
        "lr_schedule": [e.lr for e in result.history if e.kind == "step"],
        "out": None,
    }
    if not is_main:
        return None  # under torchrun, rank 0 alone saves and reports: one JSON document on stdout
    if result.model is None:
        print(f"{result.reason}: nothing saved", file=sys.stderr)
        return summary
    summary["out"] = str(result.save(out, overwrite=args.overwrite))
    write_record(out, dataset, args.data, config.val_fraction, config.seed)  # what it saw, for evaluate
    if args.onnx:
        from .export import ExportError, export_onnx

        try:
            summary["onnx"] = export_onnx(result.model, out / "model.onnx").to_dict()
        except ExportError as e:
            summary["onnx"] = {"error": str(e)}
            print(f"note: no model.onnx: {e}", file=sys.stderr)
    summary["stopped_at"] = result.stopped_at
    if dropped is not None:
        summary["dropped"] = dropped
    summary.update(result.results.to_dict())  # confusion matrix, per-class metrics, misclassified images
    summary["metrics"] = result.model.info.metrics
    summary["calibration"] = result.calibration.to_dict() if result.calibration else None
    summary["hyperparameters"] = result.model.info.training["hyperparameters"]
    if args.push_to:
        summary["pushed"] = result.model.push_to_hub(args.push_to, token=token)
    if not args.json:
        stopped = f"{result.reason} at epoch {result.stopped_at['epoch']}, step {result.stopped_at['step']}; " \
            if result.stopped_at else ""
        print(f"{stopped}validation accuracy {result.val_accuracy:.2%} on {dataset.name}; saved to {out}")
        for note in result.model.info.notes:
            print(f"note: {note}")
        _print_calibration(result.calibration)
        if args.push_to:
            print(f"pushed: {summary['pushed']}")
    return summary


def _print_calibration(calibration) -> None:
    """Both calibration errors, the reliability per bin, and the images answered at each "not sure" threshold."""
    if calibration is None:
        return
    print(f"confidence: {calibration.describe()}")
    bins = [{"confidence bin": f"{b['low']:.2f}-{b['high']:.2f}", "images": b["count"],
             "mean confidence before": b["confidence"], "accuracy before": b["accuracy"],
             **({"images after": a["count"], "mean confidence after": a["confidence"], "accuracy after": a["accuracy"]}
                if calibration.fitted else {})}
            for b, a in zip(calibration.reliability_before, calibration.reliability_after or calibration.reliability_before)
            if b["count"] or (calibration.fitted and a["count"])]
    print("reliability (validation):")
    print_table([{k: "-" if v is None else v for k, v in row.items()} for row in bins])
    print("answered at each confidence threshold (validation; below it: not sure):")
    print_table([{"confidence at least": r["threshold"], "answered": f"{r['answered']:.1%}", "images": r["images"],
                  "accuracy": "-" if r["accuracy"] is None else f"{r['accuracy']:.1%}"} for r in calibration.thresholds])


class _ProgressBar:
    """Draws fine-tune events as a tqdm bar (on the main process only)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None

    def __call__(self, event) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if event.kind == "start":
            print(event.message, file=sys.stderr)
            self.bar = tqdm(total=event.total_steps, unit="step", dynamic_ncols=True)
        elif event.kind == "step" and self.bar is not None:
            self.bar.update(event.step - self.bar.n)
            self.bar.set_postfix(epoch=f"{event.epoch + 1}/{event.epochs}", loss=f"{event.loss:.3f}",
                                 img_s=f"{event.images_per_s:.0f}", lr=f"{event.lr:.3g}")
        elif event.kind in ("epoch", "done", "stopped") and self.bar is not None:
            self.bar.write(event.message)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _starter(args: argparse.Namespace) -> dict[str, Any]:
    from .services.starters import build_starter

    out = {}
    for arch in args.archs:
        bar = _ProgressBar(enabled=not args.json)
        folder = build_starter(arch, on_event=bar, force=args.force)
        bar.close()
        from .weights import load

        model = load(folder, device="cpu")
        out[arch] = {"folder": str(folder), "val_accuracy": model.info.metrics.get("accuracy"),
                     "seconds": model.info.training.get("seconds")}
        if not args.json:
            print(f"{arch}: {folder} (validation accuracy {out[arch]['val_accuracy']:.2%}, "
                  f"trained in {out[arch]['seconds']} s)")
    return out


def _registry(args: argparse.Namespace, choices: Sequence[str]):
    """The app's own model registry, so the CLI accepts what the app's choosers accept, plus local folders.

    Short names fall back to the starter digit models offline, saying so (and training them
    first, with a progress bar, if this machine has none yet).
    """
    from .cli_common import StarterBar
    from .services.registry import ModelRegistry

    registry = ModelRegistry(args.device, args.precision, check_hub=False, compile=args.compile, allow_paths=True,
                             engine=args.engine, background_choice=False)
    for choice in dict.fromkeys(choices):
        note = registry.starter_note(choice)
        if note:
            print(f"note: {note}", file=sys.stderr)
            bar = StarterBar(enabled=not args.json)
            registry.starters.wait(choice.strip(), bar, only=True)
            bar.close()
    return registry


def _decode_images(paths: Sequence[str]) -> list:
    """Every image decoded (a missing or bad file named) before any model is loaded or trained."""
    from .images import decode_batch

    return decode_batch(list(paths))


def _classify(args: argparse.Namespace) -> dict[str, Any]:
    paths = batch_cli.inputs(args, "images")
    if batch_cli.is_batch(paths, args):
        return batch_cli.classify(args, paths, lambda: _registry(args, [args.model]))
    from .batch import check_min_confidence

    min_confidence = check_min_confidence(args.min_confidence)
    pictures = _decode_images(paths)
    registry = _registry(args, [args.model])
    results, notes = {}, []
    predictor = registry.predictor(args.model)
    predictor._check_top_k(args.top_k)  # the app clamps its slider; a typed --top-k above the classes is refused
    _print_notes(predictor.notes, args)
    for path, picture in zip(paths, pictures):
        answer = registry.classify(picture, args.model, args.top_k, heatmap=False, image_name=path)
        results[path] = answer.prediction.as_dict()
        if answer.note:
            notes.append(f"{path}: {answer.note}")
            print(f"note: {path}: {answer.note}", file=sys.stderr)
        if not args.json:
            print(f"{path}:" + batch_cli.not_sure_text(answer.prediction.probabilities[0], min_confidence))
            for label, p in answer.prediction.as_dict().items():
                print(f"  {p:7.2%}  {label}")
    not_sure = [p for p, r in results.items() if batch_cli.not_sure_text(next(iter(r.values())), min_confidence)]
    return {"model": predictor.name, "device": str(predictor.device), "precision": predictor.precision,
            "results": results, "notes": notes, "not_sure": not_sure}


def _compare(args: argparse.Namespace) -> dict[str, Any]:
    paths = batch_cli.inputs(args, "image")
    if batch_cli.is_batch(paths, args):
        return batch_cli.compare_set(args, paths, lambda: _registry(args, args.models))
    (picture,) = _decode_images(paths)
    registry = _registry(args, args.models)
    result = registry.compare(picture, args.models, args.top_k, runs=args.runs, image_name=paths[0])
    _print_notes(result.notes, args)
    if not args.json:
        for name, prediction in result.predictions.items():
            print(f"{name}:")
            for label, p in prediction.as_dict().items():
                print(f"  {p:7.2%}  {label}")
        print(f"top-1 agrees: {'yes' if result.agree else 'no'}\n")
        print_table(result.table())
    return {
        "agree": result.agree,
        "predictions": {n: p.as_dict() for n, p in result.predictions.items()},
        "timings": {n: t.to_dict() for n, t in result.timings.items()},
        "parameters": result.parameters,
        "gmacs": result.gmacs,
    }


def _bench(args: argparse.Namespace) -> dict[str, Any]:
    from .bench import run_bench

    variants = args.variants
    if variants is None and args.engine != "auto":  # only that engine's paths (the peers are always measured)
        from .engines import candidates
        from .hardware import resolve_device

        variants = [f"{e} {p}" for e, p in candidates(resolve_device(args.device), args.engine)]
    report = run_bench(
        args.models, batch_size=args.batch_size, runs=args.runs, device=args.device, variants=variants,
        compile=args.compile, log=None if args.json else print,
    )
    if not args.json:
        print("\nModel only (preprocessed batches):")
        print_table(report["rows"])
        print("\nEnd to end (JPEG files -> top-5):")
        print_table(report["end_to_end"])
        print()
        for note in report["notes"]:
            print(f"note: {note}")
    return report


def _bench_finetune(args: argparse.Namespace) -> dict[str, Any]:
    from .bench_finetune import run_finetune_bench

    report = run_finetune_bench(args.arch, epochs=args.epochs, image_size=args.image_size, per_class=args.per_class,
                                freezes=tuple(args.freezes), precision=args.precision, device=args.device,
                                wall_arch=None if args.wall_arch == "none" else args.wall_arch,
                                log=None if args.json else print)
    return _printed(report, args)


def _bench_first_answer(args: argparse.Namespace) -> dict[str, Any]:
    from .bench_first_answer import run_first_answer_bench
    from .names import model_source

    report = run_first_answer_bench(model_source(args.model, allow_paths=True), runs=args.runs, device=args.device,
                                    log=None if args.json else print)
    return _printed(report, args)


def _printed(report: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """A benchmark's table and notes, unless --json (then main prints the report itself)."""
    if not args.json:
        print_table(report["rows"])
        for note in report["notes"]:
            print(f"note: {note}")
    return report


def _print_notes(notes: Sequence[str], args: argparse.Namespace) -> None:
    for note in notes:
        print(f"note: {note}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    import logging
    import warnings

    # The service logs for the app's operator; here the same facts reach the user as "note:" lines.
    logging.getLogger("resnet_hub.services").setLevel(logging.ERROR)

    parser = build_parser()
    args = parser.parse_args(argv)
    batch_cli.check_given(args, parser)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the notes they carry are printed as "note: ..." lines
            result = args.run(args)
    except (ResNetHubError, FileExistsError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    if args.json and result is not None:
        json.dump(result, sys.stdout, indent=2, default=str)
        print()
    # A fine-tune stopped before it learned anything produced nothing: scripts that go on to use it must not carry on.
    return EXIT_STOPPED if isinstance(result, dict) and result.get("stopped") and not result.get("out") else 0


if __name__ == "__main__":
    sys.exit(main())
