"""Weights: a source (Hub repo id or folder) <-> a ResNet with its metadata.

A folder in Hub layout holds ``config.json`` and ``model.safetensors``. Three
layouts are read, each mapped key for key onto torchvision's names:

- resnet-hub's own (what :meth:`HubResNet.save_pretrained` writes);
- timm's (``architecture`` + ``pretrained_cfg``; torchvision key names);
- transformers' ``ResNetForImageClassification`` (``model_type: resnet``).

Only safetensors are read: pickle checkpoints are refused, never unpickled.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from .errors import (
    CorruptWeightsError,
    LayoutError,
    PickleRefusedError,
    PushError,
    SourceError,
    WeightsMismatchError,
    WeightsNotFoundError,
)
from .model import ARCHITECTURES, ResNet, ResNetConfig, UnknownArchitectureError

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
PREPROCESSOR_NAME = "preprocessor_config.json"  # transformers keeps preprocessing here
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
FORMAT = "resnet-hub"
FORMAT_VERSION = 1

# Same training recipe (timm's A1, arXiv:2110.00476) for both, so the comparison is fair.
DEFAULT_SOURCES = {
    "resnet18": "timm/resnet18.a1_in1k",
    "resnet50": "timm/resnet50.a1_in1k",
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
_PIL_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # transformers stores PIL's enum
HUB_ETAG_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the model's input: resize to ``input_size / crop_pct``,
    center-crop ``input_size``, normalise with ``mean``/``std``. Read from the
    checkpoint's own config, so inference and training cannot drift apart."""

    input_size: int = 224
    crop_pct: float = 0.875
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        if not 8 <= self.input_size <= 1024:
            raise ValueError(f"input_size must be between 8 and 1024 px, got {self.input_size}")
        if not 0.1 <= self.crop_pct <= 1.0:
            raise ValueError(f"crop_pct must be in [0.1, 1], got {self.crop_pct}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise ValueError(f"mean {self.mean} and std {self.std} must have one positive std per channel")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    @property
    def resize_size(self) -> int:
        return math.floor(self.input_size / self.crop_pct)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def for_stem(cls, stem: str, in_chans: int = 3) -> Preprocessing:
        """The default for randomly initialised models."""
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if in_chans == 3 else ((0.5,) * in_chans, (0.5,) * in_chans)
        if stem == "small":
            return cls(input_size=32, crop_pct=1.0, interpolation="bilinear", mean=mean, std=std)
        return cls(mean=mean, std=std)


@dataclass
class WeightsInfo:
    """What travels with the weights: label names, preprocessing, provenance, results."""

    labels: list[str]
    preprocessing: Preprocessing
    source: str | None = None  # where these weights were loaded from
    layout: str = FORMAT
    base_model: str | None = None
    datasets: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)  # hyperparameters, data summary, confusion matrix
    license: str = "apache-2.0"
    notes: list[str] = field(default_factory=list)  # what loading did, e.g. a replaced head


@functools.cache
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, shipped with the package (torchvision's list)."""
    text = (Path(__file__).parent / "imagenet_classes.txt").read_text(encoding="utf-8")
    return tuple(text.splitlines())


def default_labels(num_classes: int) -> list[str]:
    if num_classes == 1000:
        return list(imagenet_labels())
    return [f"class_{i}" for i in range(num_classes)]


class HubResNet(ResNet):
    """A :class:`ResNet` that carries its :class:`WeightsInfo` and moves to and from the Hub.

    >>> model = create("resnet18", num_classes=3, labels=["cat", "dog", "fox"])
    >>> model.save_pretrained("my-resnet")            # doctest: +SKIP
    >>> load("my-resnet").info.labels                  # doctest: +SKIP
    ['cat', 'dog', 'fox']
    """

    def __init__(self, config: ResNetConfig, info: WeightsInfo | None = None):
        super().__init__(config)
        if info is None:
            info = WeightsInfo(default_labels(config.num_classes), Preprocessing.for_stem(config.stem, config.in_chans))
        if len(info.labels) != config.num_classes:
            raise ValueError(f"{len(info.labels)} label names for a {config.num_classes}-class head")
        self.info = info

    @property
    def labels(self) -> list[str]:
        return self.info.labels

    @property
    def preprocessing(self) -> Preprocessing:
        return self.info.preprocessing

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def reset_head(self, num_classes: int, labels: list[str] | None = None) -> None:
        labels = list(labels) if labels is not None else default_labels(num_classes)
        if len(labels) != num_classes:
            raise ValueError(f"{len(labels)} label names for a {num_classes}-class head")
        super().reset_head(num_classes)
        self.info.labels = labels

    def config_dict(self) -> dict:
        info = self.info
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "architecture": self.config.architecture,
            "model": self.config.to_dict(),
            "labels": list(info.labels),
            "preprocessing": info.preprocessing.to_dict(),
            "base_model": info.base_model,
            "datasets": list(info.datasets),
            "metrics": dict(info.metrics),
            "training": info.training,
            "license": info.license,
        }

    def save_pretrained(self, folder: str | os.PathLike, *, overwrite: bool = True) -> Path:
        """Write ``config.json``, ``model.safetensors`` and a model card ``README.md``.

        The folder appears whole or not at all: everything is written to a
        temporary sibling first and renamed into place.
        """
        folder = Path(folder)
        if folder.exists() and not overwrite:
            raise FileExistsError(f"{folder} already exists: choose another folder or allow overwriting")
        state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in self.state_dict().items()}
        with _atomic_folder(folder) as tmp:
            # One metadata key: safetensors orders several at random, and identical weights should give identical bytes.
            save_file(state, tmp / WEIGHTS_NAME, metadata={"format": "pt"})
            (tmp / CONFIG_NAME).write_text(json.dumps(self.config_dict(), indent=2) + "\n", encoding="utf-8")
            (tmp / CARD_NAME).write_text(render_card(self), encoding="utf-8")
        return folder

    def push_to_hub(
        self,
        repo_id: str,
        *,
        token: str | None = None,
        private: bool = False,
        commit_message: str = "Upload ResNet weights with resnet-hub",
    ) -> str:
        """Upload exactly what :meth:`save_pretrained` writes to ``repo_id``; returns the commit URL.

        The repo id and the token are checked before anything is sent; the
        token never appears in logs or error messages.
        """
        from huggingface_hub import HfApi, get_token

        repo_id, _ = parse_repo_id(repo_id, allow_revision=False)
        token = token or get_token()
        if not token:
            raise PushError(
                "no Hugging Face token: log in with `hf auth login`, set HF_TOKEN, or pass token=... "
                "(a token with write access)"
            )
        failure = None
        with tempfile.TemporaryDirectory(prefix="resnet-hub-push-") as tmp:
            folder = self.save_pretrained(Path(tmp) / "model")
            try:
                api = HfApi(token=token)
                api.create_repo(repo_id, private=private, exist_ok=True)
                commit = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message)
            except Exception as e:  # noqa: BLE001 - any failure becomes one message without the token
                failure = _scrub(str(e), token)
        if failure is not None:
            # Raised outside the except block, so no chained exception carries the token either.
            raise PushError(f"push to {repo_id} failed: {failure}")
        return str(commit.commit_url)


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


@functools.cache
def _card_template() -> str:
    # Installed wheels carry a copy inside the package; a checkout reads the top-level file.
    for path in (Path(__file__).parent / "weights_card.md", Path(__file__).parent.parent / "weights_card.md"):
        if path.is_file():
            return path.read_text(encoding="utf-8")
    raise FileNotFoundError("weights_card.md (the model card template) is missing from the installation")


def render_card(model: HubResNet) -> str:
    """The model card (``README.md``) for ``model``, rendered from ``weights_card.md``."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    info = model.info
    name = info.training.get("name") or f"{model.config.architecture}-{len(info.labels)}-classes"
    eval_results = None
    if "accuracy" in info.metrics and info.datasets:
        eval_results = [
            EvalResult(
                task_type="image-classification",
                dataset_type=info.datasets[0],
                dataset_name=info.datasets[0],
                metric_type="accuracy",
                metric_value=info.metrics["accuracy"],
                dataset_split="validation",
            )
        ]
    data = ModelCardData(
        library_name="resnet-hub",
        license=info.license,
        tags=["image-classification", "resnet", model.config.architecture, "resnet-hub", "safetensors"],
        pipeline_tag="image-classification",
        base_model=info.base_model,
        datasets=info.datasets or None,
        metrics=sorted(info.metrics) or None,
        model_name=name,
        eval_results=eval_results,
    )
    card = ModelCard.from_template(
        data,
        template_str=_card_template(),
        model_name=name,
        config=model.config,
        info=info,
        num_parameters=model.num_parameters(),
        preprocessing=info.preprocessing,
    )
    return str(card)


@contextmanager
def _atomic_folder(folder: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``folder``; on success it replaces ``folder`` by rename."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        yield tmp
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
            os.replace(folder, old / folder.name)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def create(
    architecture: str = "resnet50",
    *,
    num_classes: int = 1000,
    labels: list[str] | None = None,
    preprocessing: Preprocessing | None = None,
    **config: Any,
) -> HubResNet:
    """A randomly initialised (Kaiming) ResNet with metadata, ready to train or save.

    >>> create("resnet50", num_classes=10).fc.out_features
    10
    """
    cfg = ResNetConfig(architecture=architecture, num_classes=num_classes, **config)
    info = WeightsInfo(
        labels=list(labels) if labels is not None else default_labels(num_classes),
        preprocessing=preprocessing or Preprocessing.for_stem(cfg.stem, cfg.in_chans),
    )
    return HubResNet(cfg, info)


# ---------------------------------------------------------------------------
# Sources


_REVISION_RE = re.compile(r"^[\w.\-/]{1,200}$")


def parse_repo_id(source: str, *, allow_revision: bool = True) -> tuple[str, str | None]:
    """``"org/name@rev"`` -> ``("org/name", "rev")``, or :class:`SourceError` if malformed."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    source = source.strip()
    repo_id, _, revision = source.partition("@")
    if revision and not allow_revision:
        raise SourceError(f"{source!r}: give a repo id without '@revision'")
    if "@" in source and not _REVISION_RE.match(revision):
        raise SourceError(f"{source!r}: the revision after '@' must be a branch, tag or commit hash")
    if repo_id.count("/") != 1:
        raise SourceError(
            f"{source!r} is not a Hub repo id: write it as 'org/name' (optionally '@revision'), "
            f"or give the path of an existing folder"
        )
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise SourceError(f"{source!r} is not a valid Hub repo id: {e}") from None
    return repo_id, revision or None


def resolve(source: str | os.PathLike) -> Path:
    """The local folder for ``source``: itself if it is a folder, else the Hub snapshot.

    Hub ids resolve from the Hugging Face cache when offline (``HF_HUB_OFFLINE=1``
    or no network); only config and safetensors files are ever downloaded.
    """
    text = str(source).strip()
    if not text:
        raise SourceError("no weights source given: pass a Hub repo id such as 'timm/resnet50.a1_in1k' or a folder")
    text = DEFAULT_SOURCES.get(text, text)
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise SourceError(f"{text} is a file: pass the folder that holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    if text.startswith((".", "/", "~")) or text.count("/") > 1 or os.sep != "/" and os.sep in text:
        raise SourceError(f"folder {text} does not exist")
    repo_id, revision = parse_repo_id(text)
    return _download(repo_id, revision)


def _download(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo_id}@{revision}" if revision else repo_id
    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, PREPROCESSOR_NAME],
            etag_timeout=HUB_ETAG_TIMEOUT_S,
        )
    except GatedRepoError:
        raise SourceError(f"{where} is gated: accept its terms on the Hub and log in (`hf auth login`)") from None
    except RepositoryNotFoundError:
        raise WeightsNotFoundError(
            f"{where} was not found on the Hub (or it is private: log in with `hf auth login`)"
        ) from None
    except RevisionNotFoundError:
        raise WeightsNotFoundError(f"{where}: no such revision on the Hub") from None
    except LocalEntryNotFoundError:
        raise WeightsNotFoundError(
            f"{where} is not in the local Hugging Face cache and the Hub cannot be reached "
            f"(offline or HF_HUB_OFFLINE=1). On a machine with network run "
            f"`hf download {repo_id} {CONFIG_NAME} {WEIGHTS_NAME}` (it fills the cache), "
            f"or pass a local folder with those two files."
        ) from None
    return Path(folder)


def _pickle_files(folder: Path, repo_files: list[str] | None = None) -> list[str]:
    names = repo_files if repo_files is not None else [p.name for p in folder.iterdir()]
    return sorted(n for n in names if n.endswith(PICKLE_SUFFIXES))


def _remote_files(source: str) -> list[str] | None:
    """The repo's file list when the Hub answers; None offline or for folders."""
    from huggingface_hub import HfApi, is_offline_mode

    if Path(source).expanduser().exists() or is_offline_mode():
        return None
    try:
        repo_id, revision = parse_repo_id(DEFAULT_SOURCES.get(source, source))
        return HfApi().list_repo_files(repo_id, revision=revision)
    except Exception:  # noqa: BLE001 - only used to improve an error message
        return None


# ---------------------------------------------------------------------------
# Layouts


class _Layout:
    name: str

    def matches(self, cfg: dict) -> bool:
        raise NotImplementedError

    def read(self, cfg: dict, folder: Path) -> tuple[ResNetConfig, WeightsInfo]:
        raise NotImplementedError

    def map_key(self, key: str) -> str:
        return key


class _OwnLayout(_Layout):
    name = FORMAT

    def matches(self, cfg: dict) -> bool:
        return cfg.get("format") == FORMAT

    def read(self, cfg: dict, folder: Path) -> tuple[ResNetConfig, WeightsInfo]:
        if cfg.get("format_version", 1) > FORMAT_VERSION:
            raise LayoutError(f"{folder} was written by a newer resnet-hub (format {cfg['format_version']}): upgrade")
        config = ResNetConfig.from_dict(cfg["model"])
        info = WeightsInfo(
            labels=list(cfg["labels"]),
            preprocessing=Preprocessing(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg["preprocessing"].items()}),
            base_model=cfg.get("base_model"),
            datasets=list(cfg.get("datasets") or []),
            metrics=dict(cfg.get("metrics") or {}),
            training=dict(cfg.get("training") or {}),
            license=cfg.get("license") or "apache-2.0",
        )
        return config, info


class _TimmLayout(_Layout):
    name = "timm"

    def matches(self, cfg: dict) -> bool:
        return "architecture" in cfg and "pretrained_cfg" in cfg

    def read(self, cfg: dict, folder: Path) -> tuple[ResNetConfig, WeightsInfo]:
        arch = cfg["architecture"]
        if arch not in ARCHITECTURES:
            raise UnknownArchitectureError(
                f"timm architecture {arch!r} in {folder / CONFIG_NAME} is not a plain ResNet: "
                f"resnet-hub reads {', '.join(ARCHITECTURES)}"
            )
        model_args = dict(cfg.get("model_args") or {})
        if model_args.pop("global_pool", "avg") != "avg" or set(model_args) - {"in_chans", "num_classes"}:
            raise LayoutError(
                f"{folder / CONFIG_NAME} sets timm model_args {cfg['model_args']}, which change the "
                f"architecture: resnet-hub reads plain ResNets with average pooling"
            )
        pcfg = cfg["pretrained_cfg"]
        in_chans, height, width = pcfg.get("input_size", (3, 224, 224))
        if height != width:
            raise LayoutError(f"{folder / CONFIG_NAME}: non-square input_size {height}x{width} is not supported")
        num_classes = int(model_args.get("num_classes", cfg.get("num_classes", pcfg.get("num_classes", 1000))))
        in_chans = int(model_args.get("in_chans", cfg.get("in_chans", in_chans)))
        config = ResNetConfig(architecture=arch, num_classes=num_classes, in_chans=in_chans)
        preprocessing = Preprocessing(
            input_size=int(height),
            crop_pct=float(pcfg.get("crop_pct", 0.875)),
            interpolation=pcfg.get("interpolation", "bilinear"),
            mean=tuple(pcfg.get("mean", IMAGENET_MEAN)),
            std=tuple(pcfg.get("std", IMAGENET_STD)),
        )
        labels = cfg.get("label_names") or default_labels(num_classes)
        dataset = "imagenet-1k" if pcfg.get("tag", "").endswith("in1k") else None
        return config, WeightsInfo(list(labels), preprocessing, layout=self.name, datasets=[dataset] if dataset else [])


class _TransformersLayout(_Layout):
    name = "transformers"
    _KEYS = [
        (re.compile(r"^resnet\.embedder\.embedder\.convolution\.weight$"), "conv1.weight"),
        (re.compile(r"^resnet\.embedder\.embedder\.normalization\.(\w+)$"), r"bn1.\1"),
        (re.compile(r"^resnet\.encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.convolution\.weight$"), None),
        (re.compile(r"^resnet\.encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.normalization\.(\w+)$"), None),
        (re.compile(r"^resnet\.encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.(\d+)\.convolution\.weight$"), None),
        (re.compile(r"^resnet\.encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.(\d+)\.normalization\.(\w+)$"), None),
        (re.compile(r"^classifier\.1\.(weight|bias)$"), r"fc.\1"),
    ]

    def matches(self, cfg: dict) -> bool:
        return cfg.get("model_type") == "resnet"

    def read(self, cfg: dict, folder: Path) -> tuple[ResNetConfig, WeightsInfo]:
        block = {"basic": "basic", "bottleneck": "bottleneck"}.get(cfg.get("layer_type", "bottleneck"))
        depths = tuple(cfg.get("depths", (3, 4, 6, 3)))
        arch = next((name for name, spec in ARCHITECTURES.items() if spec == (block, depths)), None)
        if arch is None:
            raise UnknownArchitectureError(
                f"transformers ResNet with layer_type={cfg.get('layer_type')!r} depths={list(depths)} "
                f"in {folder / CONFIG_NAME} is not one of {', '.join(ARCHITECTURES)}"
            )
        widths = [64, 128, 256, 512] if block == "basic" else [256, 512, 1024, 2048]
        if cfg.get("embedding_size", 64) != 64 or list(cfg.get("hidden_sizes", widths)) != widths:
            raise LayoutError(f"{folder / CONFIG_NAME}: non-standard widths {cfg.get('hidden_sizes')} are not supported")
        if cfg.get("downsample_in_bottleneck") or cfg.get("downsample_in_first_stage"):
            raise LayoutError(
                f"{folder / CONFIG_NAME}: downsampling in the first 1x1 conv or the first stage "
                f"(ResNet v1) is not supported; resnet-hub reads v1.5 (stride on the 3x3 conv)"
            )
        id2label = cfg.get("id2label") or {}
        num_classes = len(id2label) or int(cfg.get("num_labels", 1000))
        labels = [id2label[str(i)] if str(i) in id2label else id2label.get(i) for i in range(num_classes)] if id2label else default_labels(num_classes)
        config = ResNetConfig(architecture=arch, num_classes=num_classes, in_chans=int(cfg.get("num_channels", 3)))
        return config, WeightsInfo(labels, _read_transformers_preprocessing(folder), layout=self.name)

    def map_key(self, key: str) -> str:
        for pattern, replacement in self._KEYS:
            m = pattern.match(key)
            if not m:
                continue
            if replacement is not None:
                return m.expand(replacement)
            g = m.groups()
            stage, block = f"layer{int(g[0]) + 1}", int(g[1])
            if "shortcut" in key:
                return f"{stage}.{block}.downsample.0.weight" if len(g) == 2 else f"{stage}.{block}.downsample.1.{g[2]}"
            if key.endswith("convolution.weight"):
                return f"{stage}.{block}.conv{int(g[2]) + 1}.weight"
            return f"{stage}.{block}.bn{int(g[2]) + 1}.{g[3]}"
        return key


def _read_transformers_preprocessing(folder: Path) -> Preprocessing:
    path = folder / PREPROCESSOR_NAME
    if not path.is_file():
        return Preprocessing()
    p = _read_json(path)
    size = p.get("size", 224)
    if isinstance(size, dict):
        size = size.get("shortest_edge") or size.get("height") or 224
    return Preprocessing(
        input_size=int(size),
        crop_pct=float(p.get("crop_pct") or 0.875),
        interpolation=_PIL_RESAMPLE.get(p.get("resample", 2), "bilinear"),
        mean=tuple(p.get("image_mean", IMAGENET_MEAN)),
        std=tuple(p.get("image_std", IMAGENET_STD)),
    )


LAYOUTS: tuple[_Layout, ...] = (_OwnLayout(), _TimmLayout(), _TransformersLayout())


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LayoutError(f"{path} is not valid JSON ({e}): re-download or re-save it") from None
    if not isinstance(data, dict):
        raise LayoutError(f"{path} must hold a JSON object, not {type(data).__name__}")
    return data


def _detect_layout(cfg: dict, path: Path) -> _Layout:
    for layout in LAYOUTS:
        if layout.matches(cfg):
            return layout
    raise LayoutError(
        f"{path} fits none of the layouts resnet-hub reads: its own ('format': 'resnet-hub'), "
        f"timm's ('architecture' + 'pretrained_cfg') or transformers' ('model_type': 'resnet')"
    )


# ---------------------------------------------------------------------------
# Loading


def load(
    source: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    num_classes: int | None = None,
    labels: list[str] | None = None,
) -> HubResNet:
    """Load a ResNet from a Hub repo id (``org/name[@revision]``), a short name
    (``resnet18``, ``resnet50``) or a folder in Hub layout, strictly.

    Tensors are read straight onto ``device`` (default: CUDA when available).
    ``num_classes`` (with optional ``labels``) swaps in a new head: the one
    relaxation of strict loading, reported in ``model.info.notes``. The model
    is returned in eval mode.

    >>> model = load("timm/resnet50.a1_in1k")            # doctest: +SKIP
    >>> model.info.preprocessing.interpolation           # doctest: +SKIP
    'bicubic'
    """
    device = torch.device(device) if device is not None else default_device()
    folder = resolve(source)
    config_path = folder / CONFIG_NAME
    weights_path = folder / WEIGHTS_NAME
    if not config_path.is_file():
        raise SourceError(f"{folder} has no {CONFIG_NAME}: a weights folder needs {CONFIG_NAME} and {WEIGHTS_NAME}")
    if not weights_path.is_file():
        pickles = _pickle_files(folder, _remote_files(str(source)))
        if pickles:
            raise PickleRefusedError(
                f"{source} has only pickle checkpoints ({', '.join(pickles)}): resnet-hub loads only "
                f"{WEIGHTS_NAME}, because unpickling can run arbitrary code. Convert it to safetensors "
                f"on a machine you trust, or use a repo that publishes {WEIGHTS_NAME}."
            )
        raise WeightsNotFoundError(f"{source} has no {WEIGHTS_NAME} (resnet-hub reads only safetensors weights)")

    cfg = _read_json(config_path)
    layout = _detect_layout(cfg, config_path)
    try:
        config, info = layout.read(cfg, folder)
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, (LayoutError, UnknownArchitectureError)):
            raise
        raise LayoutError(f"{config_path} is not a valid {layout.name} config: {e!r}") from None
    info.source = str(source)
    info.layout = layout.name

    state = _read_state(weights_path, layout, device)
    with torch.device("meta"):
        model = HubResNet(config, info)
    _check_state(model, state, weights_path)
    model.load_state_dict(state, strict=True, assign=True)
    model.eval()

    if num_classes is not None and num_classes != config.num_classes:
        model.reset_head(num_classes, labels)
        model.info.notes.append(
            f"head replaced: fc.weight and fc.bias of the {config.num_classes}-class checkpoint "
            f"were not loaded; a new {num_classes}-class head is randomly initialised"
        )
        logger.warning("%s: %s", source, model.info.notes[-1])
    elif labels is not None:
        if len(labels) != config.num_classes:
            raise ValueError(f"{len(labels)} label names for the {config.num_classes}-class head of {source}")
        model.info.labels = list(labels)
    return model


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _read_state(path: Path, layout: _Layout, device: torch.device) -> dict[str, Tensor]:
    try:
        tensors = load_file(path, device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise CorruptWeightsError(
            f"{path} is truncated or corrupt ({e}): delete it and download or save it again"
        ) from None
    state = {}
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and tensor.dtype != torch.float32:
            tensor = tensor.float()  # fp16/bf16 checkpoints: the model computes in fp32 unless told otherwise
        state[layout.map_key(key)] = tensor
    return state


def _check_state(model: HubResNet, state: dict[str, Tensor], path: Path) -> None:
    expected = model.state_dict()
    for key in expected:
        # A BatchNorm step counter, absent from some exports; it plays no part in inference or training.
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros((), dtype=torch.long, device=next(iter(state.values())).device)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({_some(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({_some(unexpected)})")
        raise WeightsMismatchError(
            f"{path} does not fit {model.config.architecture}: {'; '.join(parts)}. "
            f"Check that config.json describes these weights."
        )
    for key, ref in expected.items():
        if state[key].shape != ref.shape:
            raise WeightsMismatchError(
                f"{path}: tensor {key} has shape {tuple(state[key].shape)}, "
                f"{model.config.architecture} expects {tuple(ref.shape)}"
            )
        if state[key].is_floating_point() and not torch.isfinite(state[key]).all():
            raise CorruptWeightsError(f"{path}: tensor {key} holds NaN or Inf values: these weights are broken")


def _some(keys: list[str], n: int = 4) -> str:
    return ", ".join(keys[:n]) + (f", ... {len(keys) - n} more" if len(keys) > n else "")
