"""The settings of a fine-tune run: one typed config, free of torch so the CLI can read its defaults fast."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ResNetHubError

OPTIMIZERS = ("sgd", "adamw")
DEFAULT_BATCH_SIZE = 64  # clipped to the training set unless the user asked for a batch size
SMALL_PHOTO_SET = 5000  # images: below this, a pretrained base freezes its first stages by default
DEFAULT_PRETRAINED_FREEZE = 3
# Where the freeze default comes from: the project's seed notes (issue 13) advise freezing the first three stages for
# small-sample transfer; early layers learn general features that transfer (Yosinski et al. 2014, arXiv:1411.1792).
FREEZE_ADVICE = ("the first three stages stay frozen by default for a pretrained base on a small photo set: the "
                 "project's seed notes advise it for small-sample transfer (early layers learn general features, "
                 "Yosinski et al. 2014, arXiv:1411.1792)")
DEFAULT_CACHED_VIEWS = 2  # views per image in the frozen-feature cache: the image as served + 1 augmented copy
CACHE_ENGINES = ("auto", "torch", "openvino")  # what computes the frozen-feature cache


class FinetuneError(ResNetHubError, ValueError):
    """Hyperparameters or a setup that cannot train."""


@dataclass
class FinetuneConfig:
    """Every knob of a run, with its unit. Defaults suit a few minutes on a laptop CPU."""

    base: str = "resnet18"  # weights source (short name, Hub id, folder) or "scratch:resnet18"
    epochs: int = 3
    lr: float | None = None  # peak learning rate; None: 0.05 for SGD, 1e-3 for AdamW
    batch_size: int | None = None  # global, split across processes under torchrun; None: 64, clipped to the training set
    optimizer: str = "sgd"  # "sgd" (Nesterov momentum) or "adamw"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_fraction: float = 0.1  # of all steps, linear from 0, then cosine to 0
    label_smoothing: float = 0.1
    freeze: int | None = None  # -1: train all; 0: freeze the stem; N: stem + layer1..N; None: 3 for a pretrained
    #                            base on a small photo set (FREEZE_ADVICE), else -1
    val_fraction: float = 0.2
    image_size: int | None = None  # None: the base model's own input size
    crop_pct: float | None = None  # share of the resized image kept by the centre crop; None: the base's own
    #                                (from scratch: 1.0 for digits, 0.875 for photos)
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # bf16 autocast on AVX-512-BF16/AMX CPUs and Ampere+ GPUs, fp16 on older GPUs
    time_budget_s: float | None = None  # stop after this many seconds, keeping what was learned (as Stop does)
    augment: str = "auto"  # "auto" (from the data), "photo", "digits" or "none"
    clean_epochs: int = 0  # the last N epochs train on un-augmented images, as the model will see them
    val_every_epoch: bool = True  # False: validate once, at the end (the starters, which no one watches, do)
    zero_init_residual: bool = True  # from scratch only
    cache_features: bool = True  # run the frozen stem + stages once per view and train the rest on the cache
    cached_views: int = DEFAULT_CACHED_VIEWS  # per image: the image as served, then augmented copies
    cache_engine: str = "auto"  # what computes the cache: "auto" (OpenVINO on CPU when it runs and checks), "torch"

    def validate(self, num_train: int | None = None) -> None:
        problems = []
        if self.cache_engine not in CACHE_ENGINES:
            problems.append(f"cache engine must be one of {', '.join(CACHE_ENGINES)}, got {self.cache_engine!r}")
        if not isinstance(self.epochs, int) or self.epochs < 1:
            problems.append(f"epochs must be a whole number of at least 1, got {self.epochs}")
        if self.lr is not None and not (0 < self.lr <= 10):
            problems.append(f"learning rate must be above 0 (and at most 10), got {self.lr}")
        if self.batch_size is None:
            pass  # DEFAULT_BATCH_SIZE, clipped to the training set
        elif not isinstance(self.batch_size, int) or self.batch_size < 1:
            problems.append(f"batch size must be at least 1, got {self.batch_size}")
        elif num_train is not None and self.batch_size > num_train:
            problems.append(f"batch size {self.batch_size} is larger than the {num_train} training images: use at most {num_train}")
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.freeze is not None and not -1 <= self.freeze <= 4:
            problems.append(f"frozen stages must be from -1 (none) to 4 (all but the head), got {self.freeze}")
        if not 0 < self.val_fraction < 1:
            problems.append(f"validation fraction must be between 0 and 1, got {self.val_fraction}")
        if self.image_size is not None and not 16 <= self.image_size <= 512:
            problems.append(f"image size must be from 16 to 512 px, got {self.image_size}")
        if self.crop_pct is not None and not 0.5 <= self.crop_pct <= 1:
            problems.append(f"crop fraction must be from 0.5 to 1, got {self.crop_pct}")
        if self.weight_decay < 0 or not 0 <= self.label_smoothing < 1 or not 0 <= self.warmup_fraction < 1:
            problems.append("weight decay must be >= 0, label smoothing and warm-up fraction in [0, 1)")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            problems.append(f"time budget must be positive, got {self.time_budget_s}")
        if not isinstance(self.clean_epochs, int) or not 0 <= self.clean_epochs <= max(self.epochs, 0):
            problems.append(f"clean epochs must be from 0 to the number of epochs ({self.epochs}), got {self.clean_epochs}")
        if self.augment not in ("auto", "photo", "digits", "none"):
            problems.append(f"augment must be auto, photo, digits or none, got {self.augment!r}")
        if not isinstance(self.cached_views, int) or not 1 <= self.cached_views <= 32:
            problems.append(f"cached views must be a whole number from 1 to 32, got {self.cached_views}")
        if problems:
            raise FinetuneError("; ".join(problems))

    def resolved_batch_size(self, num_train: int, world_size: int = 1) -> int:
        """The batch a run uses: the one asked for, or the default clipped to the training set (whole per process)."""
        if self.batch_size is not None:
            return self.batch_size
        clipped = min(DEFAULT_BATCH_SIZE, num_train)
        return max(world_size, clipped - clipped % world_size)

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else (0.05 if self.optimizer == "sgd" else 1e-3)
