"""Weights: a source (Hub repo id or folder) <-> a ResNet with its metadata.

A folder in Hub layout holds ``config.json`` and ``model.safetensors``. Three
layouts are read, each mapped key for key onto torchvision's names:

- resnet-hub's own (what :meth:`HubResNet.save_pretrained` writes);
- timm's (``architecture`` + ``pretrained_cfg``; torchvision key names);
- transformers' ``ResNetForImageClassification`` (``model_type: resnet``).

Only safetensors are read: pickle checkpoints are refused, never unpickled.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from . import atomic
from .errors import (
    CorruptWeightsError,
    LayoutError,
    PickleRefusedError,
    PushError,
    SourceError,
    WeightsMismatchError,
    WeightsNotFoundError,
)
from .hub import DEFAULT_SOURCES, parse_repo_id, pickle_checkpoints, resolve
from .layouts import CONFIG_NAME, WEIGHTS_NAME, Layout, detect_layout, read_json
from .names import stored_source
from .metadata import FORMAT, FORMAT_VERSION, Preprocessing, WeightsInfo, check_labels, default_labels, distinct_labels
from .model import ResNet, ResNetConfig, UnknownArchitectureError

logger = logging.getLogger(__name__)

CARD_NAME = "README.md"



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
        check_labels(info.labels, "the label names")
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
        check_labels(labels, "the label names")
        super().reset_head(num_classes)
        self.info.labels = labels
        self.info.temperature = 1.0  # a new head's confidence is not the old one's

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
            # Only when calibrated: a config without it loads as T = 1, and other readers ignore it.
            **({"temperature": round(info.temperature, 6)} if info.temperature != 1.0 else {}),
            **self._timm_fields(),
        }

    def _timm_fields(self) -> dict:
        """The keys timm reads from a folder or Hub repo (``timm.create_model("local-dir:...")`` or
        ``"hf-hub:..."``), for models timm builds as they are: an ImageNet-family ResNet with the ImageNet stem,
        projection shortcuts, BatchNorm and 64 channels. Their weights already have timm's key names."""
        c = self.config
        if (c.family != "imagenet" or c.stem != "imagenet" or c.shortcut != "B" or c.width != 64 or not c.batchnorm):
            return {}
        p = self.info.preprocessing
        return {
            "num_classes": c.num_classes,
            "num_features": c.num_features,
            "label_names": list(self.info.labels),
            **({"model_args": {"in_chans": c.in_chans}} if c.in_chans != 3 else {}),
            "pretrained_cfg": {
                "input_size": [c.in_chans, p.input_size, p.input_size], "crop_pct": p.crop_pct, "crop_mode": "center",
                "interpolation": p.interpolation, "mean": list(p.mean), "std": list(p.std),
                "num_classes": c.num_classes, "first_conv": "conv1", "classifier": "fc",
            },
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
        tmp.chmod(0o755)  # mkdtemp makes it 0700; a saved model should read like any other folder
        # fsync: the weights may be a fine-tune's only copy; unflushed, a power cut can leave empty files in place.
        atomic.sync(tmp)
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
            os.replace(folder, old / folder.name)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
        atomic.sync(folder.parent, recursive=False)
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
# Loading


def load(
    source: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    num_classes: int | None = None,
    labels: list[str] | None = None,
) -> HubResNet:
    """Load a ResNet from a Hub repo id (``org/name[@revision]``), a short name
    (``resnet18``, ``resnet50``), a model of the local store (``NAME`` or ``local:NAME``,
    as the app lists it) or a folder in Hub layout, strictly.

    Tensors are read straight onto ``device`` (default: CUDA when available).
    ``num_classes`` (with optional ``labels``) swaps in a new head: the one
    relaxation of strict loading, reported in ``model.info.notes``. The model
    is returned in eval mode.

    >>> model = load("timm/resnet50.a1_in1k")            # doctest: +SKIP
    >>> model.info.preprocessing.interpolation           # doctest: +SKIP
    'bicubic'
    """
    device = torch.device(device) if device is not None else default_device()
    stored = (stored_source(source) if isinstance(source, str) and source.strip() not in DEFAULT_SOURCES
              and not Path(source).expanduser().exists() else None)
    folder = resolve(stored or source)
    config_path = folder / CONFIG_NAME
    weights_path = folder / WEIGHTS_NAME
    if not config_path.is_file():
        raise SourceError(f"{folder} has no {CONFIG_NAME}: a weights folder needs {CONFIG_NAME} and {WEIGHTS_NAME}")
    if not weights_path.is_file():
        pickles = pickle_checkpoints(folder, str(source))
        if pickles:
            raise PickleRefusedError(
                f"{source} has only pickle checkpoints ({', '.join(pickles)}): resnet-hub loads only "
                f"{WEIGHTS_NAME}, because unpickling can run arbitrary code. Convert it to safetensors "
                f"on a machine you trust, or use a repo that publishes {WEIGHTS_NAME}."
            )
        raise WeightsNotFoundError(f"{source} has no {WEIGHTS_NAME} (resnet-hub reads only safetensors weights)")

    cfg = read_json(config_path)
    layout = detect_layout(cfg, config_path)
    try:
        config, info = layout.read(cfg, folder)
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, (LayoutError, UnknownArchitectureError)):
            raise
        raise LayoutError(f"{config_path} is not a valid {layout.name} config: {e!r}") from None
    info.source = str(source)
    info.layout = layout.name
    if layout.name == FORMAT:  # this project writes distinct names: a repeat is a hand-edited or foreign config
        try:
            check_labels(info.labels, str(config_path))
        except ValueError as e:
            raise LayoutError(f"{e} in its \"labels\" list") from None
    else:  # timm and transformers configs on the Hub do repeat names (ImageNet's two 'crane's): keep them apart
        info.labels, note = distinct_labels(info.labels)
        if note:
            info.notes.append(note)

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
        check_labels(list(labels), f"the label names given for {source}")
        model.info.labels = list(labels)
    return model


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _read_state(path: Path, layout: Layout, device: torch.device) -> dict[str, Tensor]:
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
