"""Which engine serves a :class:`~resnet_hub.predict.Predictor`: chosen before the first answer (the synchronous
path: ``bench`` times the engine chosen), or chosen in the background while the plain torch path answers.

Choosing an engine for a model not served here before converts, quantizes, checks and times every candidate
(:func:`resnet_hub.engines.choose`): about 53 s for a ResNet-50 on a Zen 3. With ``background=True`` the Predictor
answers at once on torch fp32 (BatchNorm folded, channels_last: no conversion), and :data:`BACKGROUND_CHOICES`, one
worker thread for the whole process at a lower CPU priority, makes the choice, one model at a time, after the
first answer (or :data:`FIRST_ANSWER_GRACE_S`) so the two do not share the cores. The Predictor switches to the
chosen engine once it is built and has passed its check against fp32, under its forward lock: a request runs on
one engine or the other, never on a half-switched one, and its answer says which.
"""

from __future__ import annotations

import copy
import logging
import queue
import threading
import warnings
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from . import engines as _engines
from .engines import CALIBRATION_IMAGES, CHECK_IMAGES, EngineChoice, EngineError
from .images import center_digit, to_tensor_batch
from .training_slot import lower_this_threads_priority
from .weights import HubResNet

logger = logging.getLogger(__name__)

FIRST_ANSWER_GRACE_S = 2.0  # a background choice waits this long for the model's first answer before it starts
EXIT_WAIT_S = 120.0  # at the interpreter's exit, how long to wait for a choice under way (its conversion)


def laid_out(pictures: Sequence[Image.Image], kind: str) -> list[Image.Image]:
    """Images as a model of ``kind`` is served them: a digit centred and scaled the MNIST way (:func:`center_digit`),
    a photo as it is."""
    return [center_digit(p) for p in pictures] if kind == "digits" else list(pictures)


def default_calibration(model: HubResNet, n: int = CALIBRATION_IMAGES) -> Tensor:
    """Real images for int8 calibration: MNIST digits for digit models (centred, as served), scikit-image photos
    otherwise."""
    from .examples import calibration_images

    kind = model.info.training.get("kind", "photo")
    return to_tensor_batch(laid_out(calibration_images(kind, n), kind), model.preprocessing)  # as they are served


def default_check_images(model: HubResNet, n: int = CHECK_IMAGES) -> tuple[Tensor, str]:
    """Real images of the model's kind that calibration never saw, and what they are."""
    from .examples import check_images

    kind = model.info.training.get("kind", "photo")
    images, what = check_images(kind, n)
    return to_tensor_batch(laid_out(images, kind), model.preprocessing), what


def has_trained_weights(model: HubResNet) -> bool:
    """Weights with a training record (fine-tuned or trained here) or from a Hub repo: an accuracy to protect."""
    from .hub import hub_repo_id

    return bool(model.info.training) or bool(model.info.metrics) or (
        bool(model.info.source) and hub_repo_id(model.info.source) is not None)


class PendingChoice(EngineChoice):
    """What serves until the background choice is made: the plain torch path (``gate``: why it still serves, when
    the choice failed)."""

    def summary(self) -> str:
        if self.gate:
            return f"{self.chosen}: {self.gate}"
        return f"{self.chosen} for now: the fastest engine that passes its check is being chosen in the background"


def plain_engine(model: HubResNet, device: torch.device, fold: bool = True):
    """torch fp32, BatchNorm folded and channels_last: what serves at once, with nothing to convert or check."""
    return _engines.build(model, device, "torch", "fp32", calibration=None, cache_dir=None, weights_key="", fold=fold)


def build_engine(model: HubResNet, device: torch.device, engine: str, precision: str, *, calibration: Tensor | None,
                 cache_dir: str | None, fold: bool, compile: bool, extra: dict | None, stop=None):
    """(engine, EngineChoice, notes): with ``precision="auto"`` the fastest that passes its check against fp32
    (:func:`resnet_hub.engines.choose`), else the one named (torch when it cannot run here, saying why)."""
    cache = Path(cache_dir) if cache_dir else None
    notes: list[str] = []
    # The reference and the conversions run in eval mode; the caller's model keeps its own mode.
    model = copy.deepcopy(model).eval() if model.training else model
    if precision in ("auto", "int8") and calibration is None and device.type == "cpu":
        calibration = default_calibration(model)
    key = _engines.weights_key(model) if (precision == "auto" or engine == "openvino") else ""
    if precision == "auto":
        check_images, what = default_check_images(model)
        try:
            built, choice = _engines.choose(model, device, engine=engine, calibration=calibration,
                                            check_images=check_images, trained=has_trained_weights(model),
                                            check_set=what, cache_dir=cache, weights_key=key, fold=fold,
                                            compile=compile, extra=extra, stop=stop)
            return built, choice, notes
        except EngineError as e:
            notes.append(f"{e}; running torch fp32")
            precision, engine = "fp32", "torch"
    wanted = "torch" if engine == "auto" else engine
    common = dict(cache_dir=cache, weights_key=key, fold=fold, compile=compile)
    try:
        built = _engines.build(model, device, wanted, precision, calibration=calibration, **common)
    except EngineError as e:
        notes.append(f"{wanted} {precision} is not available here ({e}): running torch "
                     f"{precision if wanted != 'torch' else 'fp32'} instead")
        fallback = precision if wanted != "torch" and precision in ("fp32", "int8", "bf16") else "fp32"
        try:
            built = _engines.build(model, device, "torch", fallback, calibration=calibration, **common)
        except EngineError:
            built = _engines.build(model, device, "torch", "fp32", calibration=None, **common)
    return built, EngineChoice(built.name, [], "forced: not checked at load", "", forced=True), notes


class BackgroundChoices:
    """Engine choices made one at a time, process-wide, by one worker thread at a lower CPU priority
    (:func:`~resnet_hub.training_slot.lower_this_threads_priority`). Not the training slot: fine-tunes hold that for
    minutes, and a choice should not wait for them. The worker starts with the first choice submitted."""

    def __init__(self):
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._pending = 0
        self._idle = threading.Condition(self._lock)
        self.stopping = threading.Event()

    def submit(self, work: Callable[[], None], what: str) -> None:
        """Queue ``work`` (it makes one choice); it runs after the choices queued before it."""
        with self._lock:
            if self.stopping.is_set():
                return
            self._pending += 1
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="resnet-hub-engine-choice", daemon=True)
                # Before concurrent.futures' own exit hook: a choice under way still has the decoding pool then.
                threading._register_atexit(self.stop)  # noqa: SLF001 - the hook that runs before the pools stop
                self._worker.start()
        self._queue.put((work, what))

    def _run(self) -> None:
        lower_this_threads_priority()  # requests first: the choice takes the CPU they leave
        while True:
            work, what = self._queue.get()
            try:
                if not self.stopping.is_set():
                    work()
            except Exception:  # noqa: BLE001 - a failed choice leaves the model on torch fp32, never the app down
                logger.exception("choosing the engine of %s failed", what)
            finally:
                with self._lock:
                    self._pending -= 1
                    self._idle.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every choice submitted so far is made (True), or ``timeout`` seconds pass (False)."""
        with self._lock:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    @property
    def pending(self) -> int:
        """Choices queued or under way."""
        with self._lock:
            return self._pending

    def stop(self, timeout: float = EXIT_WAIT_S) -> None:
        """Start no more choices, and wait (at most ``timeout``) for the one under way: an interpreter that exits
        during an OpenVINO conversion in another thread aborts."""
        self.stopping.set()
        if self._worker is not None:
            self.wait_idle(timeout)


BACKGROUND_CHOICES = BackgroundChoices()


def choose_later(predictor, *, engine: str, calibration: Tensor | None, fold: bool, compile: bool,
                 extra: dict | None, choices: BackgroundChoices = BACKGROUND_CHOICES) -> None:
    """Queue the engine choice of ``predictor`` (which serves on :func:`plain_engine` meanwhile); when it is made,
    the predictor switches (``predictor._switch``). A predictor no one holds any more is not chosen for."""
    ref = weakref.ref(predictor)
    answered = predictor._answered

    def work() -> None:
        answered.wait(FIRST_ANSWER_GRACE_S)
        p = ref()
        if p is None:
            return
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # what a warning would say goes into the predictor's notes
                built, choice, notes = build_engine(p.model, p.device, engine, "auto", calibration=calibration,
                                                    cache_dir=p.cache_dir, fold=fold, compile=compile, extra=extra,
                                                    stop=choices.stopping)
        except Exception as e:  # noqa: BLE001 - the plain path keeps serving; the reason is kept
            why = f"the engine choice failed ({type(e).__name__}: {e}), so it serves"
            p._switch(None, PendingChoice(p.engine_name, [], why, ""), [f"{why}: {p.engine_name}"])
            if choices.stopping.is_set():
                return  # the process is exiting: not a failure
            raise
        if choices.stopping.is_set() and choice is not None and not choice.candidates:
            return  # stopped: a fallback, not a choice
        p._switch(built, choice, notes)

    choices.submit(work, predictor.name)


def choose_ahead(source: str, device: str | torch.device = "auto", engine: str = "auto",
                 choices: BackgroundChoices = BACKGROUND_CHOICES) -> None:
    """Queue the engine choice of the model saved at ``source`` (a model just fine-tuned), into the engine cache, so
    that when it is first served its choice is read from the cache and re-checked instead of made: what a fine-tune
    does for its frozen parts. Nothing is kept in memory."""
    from .engines import default_cache_dir
    from .hardware import resolve_device
    from .weights import load

    def work() -> None:
        dev = resolve_device(device)
        model = load(source, device=dev)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            build_engine(model, dev, engine, "auto", calibration=None, cache_dir=str(default_cache_dir()), fold=True,
                         compile=False, extra=None, stop=choices.stopping)

    choices.submit(work, str(source))
