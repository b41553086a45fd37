"""What the command line's commands share: how a base is named, and the starter's progress bar."""

from __future__ import annotations

import sys


def resolved_base(base: str, quiet: bool) -> str:
    """``base`` as the app's chooser reads it: a model of the store by name, and offline the starters for the short
    names (trained first when missing, with a progress bar unless ``quiet``); ``scratch:ARCH`` as it is."""
    if base.startswith("scratch:"):
        return base
    from .services.registry import ModelRegistry

    registry = ModelRegistry(check_hub=False, allow_paths=True)
    if note := registry.starter_note(base):
        print(f"note: {note}", file=sys.stderr)
    bar = StarterBar(enabled=not quiet)
    try:
        return registry.base_source(base, bar, only=True)
    finally:
        bar.close()


class StarterBar:
    """Draws a starter model's training progress (StarterBuild) as a tqdm bar."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None

    def __call__(self, build) -> None:
        if not self.enabled or not build.total_steps:
            return
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=build.total_steps, unit="step", desc=f"training the {build.arch} starter",
                            dynamic_ncols=True)
        self.bar.update(build.step - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
