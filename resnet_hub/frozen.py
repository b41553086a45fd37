"""The frozen part of a fine-tune: the stem and the frozen stages, computed once per image into the feature cache,
and the engine that computes it (torch, or OpenVINO int8/bf16/fp32 chosen by the engines' one chooser).

A fine-tune with frozen stages trains only :class:`Unfrozen` over cached :func:`frozen_features`;
:func:`frozen_trunk` picks what computes them, and :func:`prepare_frozen_part` / :func:`prepare_base` convert a part
ahead of the run that will read it (what the app does in the background).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from . import atomic, engines
from .engines import prepare_for_inference, weights_key
from .examples import calibration_images
from .finetune_config import DEFAULT_PRETRAINED_FREEZE, FinetuneConfig
from .hardware import autocast_args, resolve_device, resolve_precision, zero_gpu_space
from .images import to_tensor_batch
from .weights import HubResNet, load

# The cache runs the frozen part with BatchNorm folded into the convolutions (faster, features within float rounding;
# docs/benchmarks.md). False: bit for bit the computation of the full loop (the test of that equivalence sets it).
FOLD_FROZEN_BATCHNORM = True
MAX_CACHE_BYTES = 2 * 2**30  # cached frozen features, at most (on a GPU also at most half its free memory)
# On CPU the frozen part runs on OpenVINO where it converts and checks, kept in the engine cache per base, frozen
# stages and image size. With nothing cached, a run converts only when that pays within it: torch's time for the run
# saved at the least speed-up measured (TRUNK_SPEEDUP_FLOOR), against what converting took here last time (else the
# default). A shorter run keeps to torch, and the app prepares the part for the next run. Figures: docs/benchmarks.md.
TRUNK_SPEEDUP_FLOOR = 2.0
TRUNK_CONVERT_DEFAULT_S = 5.0
TRUNK_CONVERSIONS = "frozen-part-conversions.json"  # in the engine cache: seconds each kind of part took to convert
TRUNK_INT8 = True  # try an int8 frozen part first (checked as any other)
TRUNK_CALIBRATION_IMAGES = 32
# Images per forward pass of the cache: on a CPU few enough that a chunk's activations stay in the CPU cache (8 beat
# 64 by 1.3-1.7x; docs/benchmarks.md); a GPU wants large batches.
CACHE_CHUNK = {"cpu": 8, "cuda": 64}
TRUNK_CHECK_IMAGES = 4  # the OpenVINO frozen part's features are checked against torch's fp32 ones on these first images


def small_photo_freeze(model: HubResNet) -> int:
    """The stages a pretrained base freezes by default on a small photo set: ``DEFAULT_PRETRAINED_FREEZE``, leaving
    at least the last stage to train."""
    return min(DEFAULT_PRETRAINED_FREEZE, len(model.stage_names) - 1)


class Unfrozen(nn.Module):
    """The trainable rest of ``model`` (the stages after the frozen ones, and the head) over cached features.

    Shares the model's parameters; with frozen BatchNorm in eval mode, ``Unfrozen(m)(frozen_features(m, x))``
    is ``m(x)``.
    """

    def __init__(self, model: HubResNet):
        super().__init__()
        self.model = model  # a child: train()/eval() reach it, and its train() keeps the frozen part in eval mode

    def forward(self, features: Tensor) -> Tensor:
        model = self.model
        if model.frozen_stages >= len(model.stage_names):
            return model.fc(features)  # (B, C): pooled features, every stage frozen
        for name in model.stage_names[model.frozen_stages :]:
            features = getattr(model, name)(features)
        return model.forward_head(features)


def frozen_part(model: HubResNet) -> nn.Module:
    """A copy of ``model`` to compute its frozen part with: eval mode, BatchNorm folded into the convolutions
    (frozen BN is a fixed affine map, so this is the same function up to float rounding, one pass less per map),
    channels_last, no gradients. The model that trains is untouched."""
    return prepare_for_inference(model, next(model.parameters()).device, "fp32", fold=FOLD_FROZEN_BATCHNORM)


@torch.no_grad()
def frozen_features(model: nn.Module, x: Tensor, autocast: dict) -> Tensor:
    """The frozen stem and stages' output for a batch of images: what the cache holds, in fp32.

    (B, C, H, W) images -> (B, C', H', W') after the last frozen stage, or (B, C') pooled when every stage is
    frozen (average pooling has no parameters). ``model``: the training model or its :func:`frozen_part`. The
    one place cached features come from: a faster verified engine (int8, say) plugs in here.
    """
    with torch.autocast(**autocast):
        f = model.stem(x.contiguous(memory_format=torch.channels_last))
        for name in model.stage_names[: model.frozen_stages]:
            f = getattr(model, name)(f)
        if model.frozen_stages >= len(model.stage_names):
            f = torch.flatten(model.avgpool(f), 1)
    return f.float()


@dataclass(frozen=True)
class CachePlan:
    """Whether a run trains on cached frozen features, and what the cache costs."""

    cached: bool
    views: int = 0  # per training image: view 0 is the image as served, the rest augmented copies
    feature_shape: tuple[int, ...] = ()
    nbytes: int = 0
    limit_bytes: int = 0
    message: str = ""


def plan_cache(config: FinetuneConfig, model: HubResNet, x_example: Tensor, n_train: int, n_val: int,
               augment: str, device: torch.device, autocast: dict) -> CachePlan:
    """Cache when the stem is frozen and the features fit in the memory bound; otherwise say why not."""
    if not config.cache_features:
        return CachePlan(False, message="frozen-feature cache off: the whole network runs every step")
    if model.frozen_stages < 0:
        return CachePlan(False)
    was_training = model.training
    shape = tuple(frozen_features(model.eval(), x_example[:1], autocast).shape[1:])
    model.train(was_training)
    views = 1 if augment == "none" else config.cached_views
    per_view = math.prod(shape) * 4  # fp32
    nbytes = (n_train * views + n_val) * per_view
    limit = MAX_CACHE_BYTES
    if device.type == "cuda":
        limit = min(limit, torch.cuda.mem_get_info(device)[0] // 2)
    what = (f"{n_train} training images x {views} view{'s' * (views != 1)} + {n_val} validation images of "
            f"{'x'.join(map(str, shape))} fp32 features after {_frozen_name(model)}")
    if nbytes > limit:
        return CachePlan(False, views, shape, nbytes, limit,
                         f"frozen-feature cache skipped: {what} need {_gib(nbytes)}, over the bound of {_gib(limit)}; "
                         f"the whole network runs every step instead (fewer views or a smaller image size would fit)")
    kind = "the image as served" + (f" + {views - 1} augmented" if views > 1 else "")
    return CachePlan(True, views, shape, nbytes, limit,
                     f"frozen-feature cache: {what} ({kind}), {_gib(nbytes)} of at most {_gib(limit)}; "
                     f"only the unfrozen stages and the head run each step")


def _frozen_name(model: HubResNet) -> str:
    stages = model.stage_names[: model.frozen_stages]
    return "the stem" + ("" if not stages else f" and {stages[0]}" if len(stages) == 1 else f" and {stages[0]}..{stages[-1]}")


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**27 else f"{n / 2**20:.1f} MiB"


_CPU_FP32 = {"device_type": "cpu", "enabled": False}  # frozen_features with no autocast: the reference


class _FrozenForward(nn.Module):
    """``frozen_features`` in fp32 as a module's forward: what OpenVINO converts."""

    def __init__(self, frozen: nn.Module):
        super().__init__()
        self.frozen = frozen

    def forward(self, x: Tensor) -> Tensor:
        return frozen_features(self.frozen, x, _CPU_FP32)


def frozen_identity(frozen: HubResNet, input_shape: tuple[int, ...]) -> tuple[str, str]:
    """(the cache key of ``frozen``'s frozen part: its own weights (the stem and frozen stages with their BatchNorm
    statistics, not the new head), depth and input shape; its size, on which a conversion's time depends)."""
    parts = nn.ModuleList([m for _, m in frozen.stage_modules()[: frozen.frozen_stages + 1]])
    shape = "x".join(map(str, input_shape))
    return (weights_key(parts, f"frozen part {frozen.frozen_stages} {shape}"),
            f"{sum(p.numel() for p in parts.parameters())} parameters at {shape}")


def frozen_trunk(model: HubResNet, x: Tensor, passes: int, autocast: dict, engine: str = "auto",
                 world_size: int = 1, kind: str = "photo") -> tuple[Callable[[Tensor], Tensor], str]:
    """(the frozen part as a function of a batch of images, a note of what runs it).

    torch runs :func:`frozen_part` under the run's autocast. On a CPU, ``engine`` "auto" or "openvino" runs it on
    OpenVINO instead: int8 (NNCF, calibrated on the bundled real images of the data's ``kind``) where
    ``TRUNK_INT8``, else or failing that the run's own precision (bf16 where it autocasts to bf16, else fp32).
    Each is converted (and quantized) once per frozen part and kept in the engine cache, and is used when: its IR
    is cached or converting it pays within this run's ``passes`` (:func:`_conversion_pays`; ``engine="openvino"``:
    always), one process runs (torchrun's processes share the cores), and its features on the first images are
    within the engines' tolerance of torch's fp32 ones (relative error <= ``MAX_REL_ERROR``). Anything else falls
    back to torch and the note says why.
    """
    # The folded copy is made only when torch runs the part or a conversion needs it: a part read from the engine
    # cache is keyed and checked on the model itself.
    folded = functools.cache(functools.partial(frozen_part, model))

    def torch_fn(batch: Tensor) -> Tensor:
        return frozen_features(folded(), batch, autocast)

    if engine == "torch" or x.device.type != "cpu":
        return torch_fn, ""
    precision = "bf16" if autocast.get("enabled") and autocast.get("dtype") == torch.bfloat16 else "fp32"
    if autocast.get("enabled") and precision == "fp32":
        return torch_fn, ""  # fp16 autocast on a CPU: torch's own
    if world_size > 1:
        return torch_fn, "frozen part on torch: several processes share the cores" if engine == "openvino" else ""
    cache_dir = engines.default_cache_dir()
    shape = tuple(x.shape[1:])
    key, size = frozen_identity(model, shape)
    probe = x[:TRUNK_CHECK_IMAGES]
    candidates = (("int8",) if TRUNK_INT8 else ()) + (precision,)
    cached = {c: engines.OpenVINOPart.is_cached(cache_dir, key, c, _calibration_name(kind)) for c in candidates}
    if engine == "openvino":
        pays: bool | None = True
    elif any(cached.values()):
        pays = None  # measured only if a candidate that is not cached comes up
    else:
        pays = _conversion_pays(torch_fn, probe, passes, cache_dir / TRUNK_CONVERSIONS, size)
        if not pays:
            return torch_fn, ""  # decided without loading OpenVINO
    why = engines.openvino_available()
    if why:
        return torch_fn, f"frozen part on torch: {why}" if engine == "openvino" else ""

    def pays_for(name: str) -> bool:  # measured only when a candidate that is not cached comes up
        nonlocal pays
        if cached[name]:
            return True
        if pays is None:
            pays = _conversion_pays(torch_fn, probe, passes, cache_dir / TRUNK_CONVERSIONS, size)
        return pays

    started: dict[str, float] = {}

    def build(candidate: str) -> engines.OpenVINOPart:
        started[candidate] = time.perf_counter()
        return engines.OpenVINOPart(lambda: _FrozenForward(folded()).eval(), shape, candidate, cache_dir=cache_dir,
                                    key=key, calibration=lambda: _trunk_calibration(model, kind),
                                    calibration_name=_calibration_name(kind))

    # The unfolded model's own frozen part, its frozen BatchNorm always in eval mode, is the fp32 reference.
    reference = functools.cache(lambda: frozen_features(model, probe, _CPU_FP32))
    name, part, found = engines.pick({c: functools.partial(build, c) for c in candidates},
                                     lambda part: engines.check_against_fp32(part(probe), reference(), logits=False),
                                     pays=pays_for)
    failed = [f"OpenVINO {c.name}: {c.why}" if c.rel_error is None else
              f"OpenVINO {c.name} was {c.rel_error:.3f} from the fp32 features (more than {engines.MAX_REL_ERROR})"
              for c in found if not c.passed]
    if part is None:
        return torch_fn, ("frozen part on torch: " + "; ".join(failed)) if failed else ""
    seconds = time.perf_counter() - started[name]
    how = {"converted": "converted", "quantized": "quantized", "cache": "read from the engine cache",
           "memory": "already loaded"}[part.source]
    if part.source in ("converted", "quantized"):
        _record_conversion(cache_dir / TRUNK_CONVERSIONS, size, seconds)
    rel = next(c.rel_error for c in found if c.name == name)
    return part, (f"frozen part on OpenVINO {name} ({how} in {seconds:.1f} s; features {rel:.4f} from fp32, "
                  f"relative)" + "".join(f"; {f}" for f in failed))


def prepare_frozen_part(model: HubResNet, kind: str, precision: str = "auto") -> str:
    """Convert (and quantize) ``model``'s frozen part into the engine cache unless it is there, so that the next
    run on the same base, frozen stages and image size reads it instead of running torch: what the app does after
    a run too short to pay for it. ``model``: a fine-tuned model (its frozen part is its base's); ``precision``:
    the run's setting. Returns the note of :func:`frozen_trunk`, checked on the calibration images; "" when there
    is nothing to do."""
    autocast = autocast_args(torch.device("cpu"), resolve_precision(precision, torch.device("cpu"))[0])
    if (model.frozen_stages < 0 or engines.openvino_available() or next(model.parameters()).device.type != "cpu"
            or _runs_train_on_a_gpu()):
        return ""
    p = model.preprocessing
    key, _ = frozen_identity(model, (len(p.mean), p.input_size, p.input_size))
    first = "int8" if TRUNK_INT8 else "fp32"  # fp32 and bf16 read the same converted IR
    if engines.OpenVINOPart.is_cached(engines.default_cache_dir(), key, first, _calibration_name(kind)):
        return ""
    images = _trunk_calibration(model, kind)
    return frozen_trunk(model, images, len(images), autocast, "openvino", 1, kind)[1]


def prepare_base(base: str, image_size: int, kind: str = "photo", precision: str = "auto") -> list[str]:
    """Convert into the engine cache the frozen parts a first fine-tune on ``base`` would use: a small set of
    ``kind`` images at ``image_size`` px, with the default freeze (:func:`small_photo_freeze`) and head only (every
    stage frozen), so that run reads them instead of running torch. What the app does at start for its default
    bases. Returns a note per part converted ([] when each was already there, or when runs would train on a GPU,
    where torch runs the frozen part)."""
    if _runs_train_on_a_gpu():
        return []
    model = load(base, device="cpu")
    model.info.preprocessing = dataclasses.replace(model.info.preprocessing, input_size=image_size)
    notes = []
    for stages in dict.fromkeys((small_photo_freeze(model), len(model.stage_names))):
        model.freeze(stages)
        note = prepare_frozen_part(model, kind, precision)
        if note:
            notes.append(f"freeze {stages}: {note}")
    return notes


def _runs_train_on_a_gpu() -> bool:
    """Whether fine-tunes here train on a GPU (where torch computes the frozen part): CUDA is visible, or will be
    inside ``@spaces.GPU`` on a ZeroGPU Space. Converting CPU parts there would only cost the app's start its CPU."""
    return resolve_device("auto").type != "cpu" or zero_gpu_space()


def _conversion_pays(torch_fn: Callable[[Tensor], Tensor], probe: Tensor, passes: int, record: Path, size: str) -> bool:
    """Whether converting the frozen part pays within a run of ``passes``: torch's time per pass, timed on ``probe``
    (after one warm-up pass), saved at ``TRUNK_SPEEDUP_FLOOR``, against the seconds converting a part of this
    ``size`` last took on this machine (``record``), or ``TRUNK_CONVERT_DEFAULT_S``."""
    torch_fn(probe)
    start = time.perf_counter()
    torch_fn(probe)
    per_pass = (time.perf_counter() - start) / len(probe)
    try:
        cost = float(json.loads(record.read_text()).get(size, TRUNK_CONVERT_DEFAULT_S))
    except (OSError, ValueError, AttributeError, TypeError):
        cost = TRUNK_CONVERT_DEFAULT_S
    return passes * per_pass * (1 - 1 / TRUNK_SPEEDUP_FLOOR) > cost


def _record_conversion(record: Path, size: str, seconds: float) -> None:
    """Remember how long converting a part of this ``size`` took here (written to a temporary name, then renamed)."""
    try:
        seen = json.loads(record.read_text()) if record.is_file() else {}
        seen = seen if isinstance(seen, dict) else {}
    except (OSError, ValueError):
        seen = {}
    seen[size] = round(seconds, 2)
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(record, json.dumps(seen, indent=1))
    except OSError:
        pass  # a read-only cache: the next run estimates from the default again


def _calibration_name(kind: str) -> str:
    """What an int8 part is calibrated on (:func:`_trunk_calibration`), for its cache key."""
    return f"{TRUNK_CALIBRATION_IMAGES} bundled {'digits' if kind == 'digits' else 'photos'}"


def _trunk_calibration(model: HubResNet, kind: str) -> Tensor:
    """Real images of the data's kind (MNIST digits, or scikit-image photos), as the run preprocesses them."""
    return to_tensor_batch(calibration_images("digits" if kind == "digits" else "photo", TRUNK_CALIBRATION_IMAGES),
                           model.preprocessing)


def cache_features(trunk: Callable[[Tensor], Tensor], x: Tensor, plan: CachePlan, augment: Callable[[Tensor], Tensor],
                   should_stop: Callable[[], str], n_train: int | None = None, view0: Tensor | None = None
                   ) -> list[Tensor] | str:
    """Feature tensors computed chunk by chunk by ``trunk`` (:func:`frozen_trunk`), one per view: view 0 of all of
    ``x`` (``view0`` where it is known already: the embeddings an inspection computed), the ``augment``-ed views of
    its first ``n_train`` rows (the training images; default: all); or the reason a stop arrived."""
    # torch's chunk, or the images an OpenVINO part spreads over its streams at once
    chunk = getattr(trunk, "chunk", None) or CACHE_CHUNK.get(x.device.type, CACHE_CHUNK["cuda"])
    views = [] if view0 is None else [view0.to(x.device)]
    for v in range(len(views), plan.views):
        rows = len(x) if v == 0 or n_train is None else n_train
        out = torch.empty((rows, *plan.feature_shape), dtype=torch.float32, device=x.device)
        for i in range(0, rows, chunk):
            if reason := should_stop():
                return reason
            batch = x[i : min(i + chunk, rows)]
            if v > 0:
                batch = augment(batch)
            out[i : i + len(batch)] = trunk(batch)
        views.append(out.contiguous(memory_format=torch.channels_last) if out.ndim == 4 else out)
    return views


def epoch_view(epoch: int, config: FinetuneConfig, views: int) -> int:
    """The cached view an epoch trains on: the clean view in clean epochs, else the views in turn."""
    if epoch >= config.epochs - config.clean_epochs:
        return 0
    return epoch % views
