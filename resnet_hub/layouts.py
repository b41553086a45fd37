"""The checkpoint layouts resnet-hub reads, each mapped key for key onto torchvision's names.

- resnet-hub's own (what ``HubResNet.save_pretrained`` writes);
- timm's (``architecture`` + ``pretrained_cfg``; torchvision key names already);
- transformers' ``ResNetForImageClassification`` (``model_type: resnet``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .errors import LayoutError
from .metadata import FORMAT, FORMAT_VERSION, IMAGENET_MEAN, IMAGENET_STD, Preprocessing, WeightsInfo, default_labels
from .model import ARCHITECTURES, ResNetConfig, UnknownArchitectureError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
PREPROCESSOR_NAME = "preprocessor_config.json"  # transformers keeps preprocessing here
_PIL_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # transformers stores PIL's enum

class Layout:
    name: str

    def matches(self, cfg: dict) -> bool:
        raise NotImplementedError

    def read(self, cfg: dict, folder: Path) -> tuple[ResNetConfig, WeightsInfo]:
        raise NotImplementedError

    def map_key(self, key: str) -> str:
        return key


class _OwnLayout(Layout):
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
            temperature=_temperature(cfg, folder),
        )
        return config, info


def _temperature(cfg: dict, folder: Path) -> float:
    """The calibration temperature (absent, as in a config written before calibration: 1, softmax as it is)."""
    t = cfg.get("temperature", 1.0)
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < float("inf"):
        raise LayoutError(f"{folder / CONFIG_NAME}: \"temperature\" must be a positive number (the calibration "
                          f"temperature; remove the field to show uncalibrated confidence), got {t!r}")
    return float(t)


class _TimmLayout(Layout):
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


class _TransformersLayout(Layout):
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
    p = read_json(path)
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


LAYOUTS: tuple[Layout, ...] = (_OwnLayout(), _TimmLayout(), _TransformersLayout())


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LayoutError(f"{path} is not valid JSON ({e}): re-download or re-save it") from None
    if not isinstance(data, dict):
        raise LayoutError(f"{path} must hold a JSON object, not {type(data).__name__}")
    return data


def detect_layout(cfg: dict, path: Path) -> Layout:
    for layout in LAYOUTS:
        if layout.matches(cfg):
            return layout
    raise LayoutError(
        f"{path} fits none of the layouts resnet-hub reads: its own ('format': 'resnet-hub'), "
        f"timm's ('architecture' + 'pretrained_cfg') or transformers' ('model_type': 'resnet')"
    )

