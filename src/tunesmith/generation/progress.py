"""Progress reporting: `progress=True` gives a tqdm bar (elapsed, done, remaining time);
a callable receives (steps done, steps in all)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Seconds between redraws of the bar: each costs ~0.5 ms (formatting, a write to the
# terminal), which at tqdm's 0.1 s was ~0.1 ms of every 20 ms decoder step.
REDRAW_SECONDS = 0.5

StepCallback = Callable[[int, int], None]
Progress = bool | StepCallback


class progress_callback:
    """Context manager turning `progress` (bool or callable) into a step callback or None."""

    def __init__(self, progress: Progress, description: str = "generating") -> None:
        self.progress = progress
        self.description = description
        self.bar: Any = None

    def __enter__(self) -> StepCallback | None:
        if callable(self.progress):
            return self.progress
        if not self.progress:
            return None

        def update(done: int, total: int) -> None:
            if self.bar is None:
                from tqdm.auto import tqdm

                self.bar = tqdm(
                    total=total,
                    desc=self.description,
                    unit="step",
                    dynamic_ncols=True,
                    mininterval=REDRAW_SECONDS,
                )
            self.bar.update(done - self.bar.n)

        return update

    def describe(self, description: str) -> None:
        """Name what is being made now (a bar shows it from its next redraw)."""
        self.description = description
        if self.bar is not None:
            self.bar.set_description(description, refresh=False)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
