"""A generation's code blocks as an iterator with its progress bar (`MusicGen.token_stream`,
and a composed piece's, `composition.compose.PieceStream`)."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from .progress import Progress, StepCallback, progress_callback


class TokenStream:
    """Iterator of code blocks [B, K, n] with its progress bar; `.prompt` holds the prompt codes."""

    def __init__(
        self,
        blocks: Iterator[torch.Tensor],
        prompt: torch.Tensor | None,
        progress: Progress,
        steps: int,
    ) -> None:
        self.prompt = prompt
        self.steps = steps  # decoder steps in all: one block each
        self.done = 0
        self._blocks = blocks
        self._progress = progress_callback(progress)
        self._on_step: StepCallback | None = None

    def __enter__(self) -> TokenStream:
        self._on_step = self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self

    def __next__(self) -> torch.Tensor:
        block = next(self._blocks)
        self.done += 1
        if self._on_step is not None:
            self._on_step(self.done, self.steps)
        return block
