"""The "Why residual?" lab: the degradation problem and vanishing gradients, run live on this project's own blocks.

Three experiments, each a function that takes its settings and returns data (a result with ``to_dict``):

- :func:`degradation`: plain and residual CIFAR-style nets (He et al. 2015, section 4.2) at two or more depths,
  all trained with one recipe on the bundled MNIST sample. The paper's finding: the deeper *plain* net ends with
  the higher training error (so it is not over-fitting), the deeper *residual* net does not.
- :func:`gradients`: at initialisation, on one real batch, the weight-gradient norm of every convolution and the
  gradient that reaches each block's output: plain against residual, with and without BatchNorm, naive against
  Kaiming initialisation; activations that explode or vanish are reported as such.
- :func:`plain_vs_resnet`: the small plain CNN of the MNIST lesson against a small ResNet.

Each takes ``on_event`` (called with a :class:`LabEvent` that carries the result so far, for live curves) and
``stop`` (a ``threading.Event``: the run ends at the next step and comes back marked ``stopped`` with the curves so
far). :func:`run_experiment` runs one by name and keeps each completed result as JSON in the model store, read back
by :func:`load_cached`; a stopped run is never kept. :func:`load_shipped` reads the project's own full runs, which
the package ships so that a fresh install has a result to show.

Modules: ``settings`` (recipes and the cached/live settings), ``nets`` (digits and networks), ``training`` and
``gradients`` (the experiments), ``results`` (what they return), ``cache`` (the store).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from .cache import cache_path, load_cached, load_shipped, save_cached
from .gradients import EXTREME, gradients
from .nets import INITS, initialise, network, plain_cnn
from .results import GradientNet, GradientResult, LabEvent, Result, TrainingResult, TrainingRun
from .settings import (
    CACHED_SETTINGS,
    EXPERIMENTS,
    LIVE_SETTINGS,
    MAX_DEPTH,
    SETTINGS_TYPES,
    DegradationSettings,
    GradientSettings,
    LabError,
    PlainVsResNetSettings,
    Recipe,
    Settings,
    check_experiment,
)
from .training import degradation, plain_vs_resnet

__all__ = [
    "CACHED_SETTINGS", "EXPERIMENTS", "EXTREME", "INITS", "LIVE_SETTINGS", "MAX_DEPTH", "DegradationSettings",
    "GradientNet", "GradientResult", "GradientSettings", "LabError", "LabEvent", "PlainVsResNetSettings", "Recipe",
    "Result", "Settings", "TrainingResult", "TrainingRun", "cache_path", "degradation", "gradients", "initialise",
    "load_cached", "load_shipped", "network", "plain_cnn", "plain_vs_resnet", "run_experiment", "save_cached",
]

_RUNNERS: dict[str, Callable[..., Result]] = {
    "degradation": degradation, "gradients": gradients, "plain-vs-resnet": plain_vs_resnet,
}


def run_experiment(experiment: str, settings: Settings | None = None, *, live: bool = False,
                   on_event: Callable[[LabEvent], None] | None = None, stop: threading.Event | None = None,
                   device: str = "auto", cache: bool = True) -> Result:
    """Run one experiment by name; a completed run is kept (``cache=True``) for :func:`load_cached`.

    ``settings`` None: :data:`LIVE_SETTINGS` with ``live=True``, else :data:`CACHED_SETTINGS`.

    >>> result = run_experiment("gradients", live=True, on_event=print)  # doctest: +SKIP
    >>> load_cached("gradients").table() == result.table()  # doctest: +SKIP
    True
    """
    check_experiment(experiment)
    if settings is None:
        settings = (LIVE_SETTINGS if live else CACHED_SETTINGS)[experiment]
    if not isinstance(settings, SETTINGS_TYPES[experiment]):
        raise LabError(f"{experiment} takes {SETTINGS_TYPES[experiment].__name__}, got {type(settings).__name__}")
    result = _RUNNERS[experiment](settings, on_event=on_event, stop=stop, device=device)
    if cache and not result.stopped:
        save_cached(result)
    return result
