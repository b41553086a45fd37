"""The lab's results kept in the model store: ``<store>/lab/<experiment>.json``, the last completed run of each; and
the project's own full runs, shipped in the package (``measured/``), which a fresh install shows until it has its own.
"""

from __future__ import annotations

import json
from pathlib import Path

from .. import atomic
from ..store import store_root
from .results import GradientResult, Result, TrainingResult
from .settings import LabError, check_experiment


def cache_path(experiment: str) -> Path:
    check_experiment(experiment)
    return store_root() / "lab" / f"{experiment}.json"


def save_cached(result: Result) -> Path:
    """Write ``result`` as the experiment's cached JSON: to a temporary name, then renamed over the old one."""
    if result.stopped:
        raise LabError(f"the {result.experiment} run was stopped: only completed runs are kept")
    path = cache_path(result.experiment)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, json.dumps(result.to_dict(), indent=1, allow_nan=False))
    return path


MEASURED = Path(__file__).with_name("measured")  # `why-residual all`'s JSON, as a maintainer's machine left it


def load_cached(experiment: str) -> Result | None:
    """The last completed result of ``experiment`` kept in the store, or None (never run, or the file is unreadable)."""
    return _read(cache_path(experiment), experiment)


def load_shipped(experiment: str) -> Result | None:
    """The project's own full run of ``experiment``, shipped with the package; its ``environment`` says on what
    machine and when it was measured. None when the package holds none."""
    check_experiment(experiment)
    return _read(MEASURED / f"{experiment}.json", experiment)


def _read(path: Path, experiment: str) -> Result | None:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        if d.get("experiment") != experiment or d.get("stopped"):
            return None
        return (GradientResult if experiment == "gradients" else TrainingResult).from_dict(d)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
