"""One job's state in a running batch (`scheduler`): its windows, its delay-pattern sequence,
its own generator and what it has made, kept as `loop.iter_frames` keeps them for a call of
its own, so that the job draws the same codes beside any others.

`JobRows` is the place a job's own settings live: its sampling settings, guidance scale and
generator, its audio prompt, its long-form windows; a job's timeline (sections, and the
transitions between their texts) would live here too, as what `JobRows.logits` mixes and what
`JobRows.start_window` prompts each window with.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import torch

from ..config import LMConfig
from ..engine.running_batch import LayeredPrefill
from ..engine.step import PREFILL_CHUNK, guide
from ..options import DEFAULTS, GenerationOptions
from .delay import apply_delay, delays, frame_views, valid_mask
from .loop import Window, make_generator, plan_windows, steps_for
from .sampling import sample


@dataclass(frozen=True)
class BatchJob:
    """What one job of a running batch asks for: a text ("" or None: unconditional), its
    settings, and optionally the codes [1, K, P] of an audio prompt to continue (its codes are
    not repeated in the job's output)."""

    text: str | None
    options: GenerationOptions = DEFAULTS
    prompt: torch.Tensor | None = None


class WindowSequence:
    """One window's delayed sequence for one job, [rows, K, length] (rows: 2 when guided, both
    taking the same tokens), laid out as `loop.iter_window` lays it out; `fed` frames of it
    have gone through the decoder, and `position` is the next one to sample."""

    def __init__(
        self, cfg: LMConfig, frames: int, rows: int, prompt: torch.Tensor | None, device: str
    ) -> None:
        k = cfg.num_codebooks
        shifts = delays(k, cfg.audio_channels)
        self.max_delay = max(shifts)
        self.length = 1 + frames + self.max_delay  # start frame + frames + the delay tail
        self.context = 0 if prompt is None else prompt.shape[-1]
        if self.context >= frames:
            raise ValueError(f"prompt has {self.context} frames; asked for {frames} in all")
        codes = torch.zeros(1, k, frames, dtype=torch.long, device=device)
        if prompt is not None:
            codes[:, :, : self.context] = prompt
        delayed = apply_delay(codes, cfg.special_token, cfg.audio_channels)
        self.seq = delayed.repeat(rows, 1, 1)  # [rows, K, length]
        self.halves = self.seq.view(rows, 1, k, self.length)
        # Positions to sample: real frames (not the delay's padding) past the prompt.
        pos = torch.arange(self.length)[None, :]
        shift = torch.tensor(shifts)[:, None]
        valid = valid_mask(k, self.length, cfg.audio_channels)
        self.writable = (valid & (pos >= 1 + shift + self.context)).to(device)
        self.every = self.writable.all(dim=0).tolist()
        self.completed = frame_views(self.seq[:1], cfg.audio_channels)
        self.first = self.context + 1  # frames fed before the first draw
        self.fed = 0
        self.position = self.first

    @property
    def prefilling(self) -> bool:
        """Whether its prompt (more than the start frame) is still being fed: a prefill runs
        module by module, `PREFILL_CHUNK` frames at a time, as it would alone."""
        return self.first > 1 and self.fed < self.first

    @property
    def finished(self) -> bool:
        return self.position >= self.length

    def next_frames(self) -> torch.Tensor:
        """The frames the decoder takes next: the next prefill chunk, or the one frame before
        `position`; [rows, K, T]."""
        end = min(self.fed + PREFILL_CHUNK, self.first) if self.prefilling else self.fed + 1
        return self.seq[:, :, self.fed : end]

    def take(self, tokens: torch.Tensor) -> torch.Tensor:
        """Write the tokens [1, K] drawn for `position` (where they are to be written) and move
        on -> the frame it completes, codes [1, K, 1], or [1, K, 0] (none yet)."""
        position = self.position
        keep = self.halves[0, :, :, position]
        writable = self.writable[:, position]
        mixed = tokens if self.every[position] else torch.where(writable, tokens, keep)
        self.halves[:, :, :, position] = mixed
        self.position += 1
        frame = position - 1 - self.max_delay  # the frame whose last codebook was just written
        if frame < self.context:
            return self.seq.new_empty(1, self.seq.shape[1], 0)
        block = self.completed[frame]
        return (block if block.dim() == 3 else block.flatten(1, 2)).clone()


@dataclass
class JobRows:
    """A running job: its settings and generator, its windows, the window it is in, its output
    (code blocks not yet taken by its handle) and its progress."""

    job: BatchJob
    cfg: LMConfig
    window: int  # frames of the model's window
    stride: int  # frames each window past the first adds
    new_frames: int  # frames of new music it makes
    device: str = "cpu"
    place: int | None = None  # its place in the pool, once it joined
    generator: torch.Generator = field(init=False)
    windows: list[Window] = field(init=False)
    index: int = 0  # the window it is in
    sequence: WindowSequence | None = None
    prefill: LayeredPrefill | None = None  # the prompt chunk going through the decoder
    history: torch.Tensor | None = None  # the last frames so far, the next window's prompt
    made: list[torch.Tensor] = field(default_factory=list)  # this window's new frames
    steps_done: int = 0
    steps_total: int = field(init=False)
    out: deque[torch.Tensor] = field(default_factory=deque)

    def __post_init__(self) -> None:
        prompt = self.job.prompt
        p = 0 if prompt is None else prompt.shape[-1]
        self.windows = plan_windows(p, self.new_frames, self.window, self.stride)
        max_delay = max(delays(self.cfg.num_codebooks, self.cfg.audio_channels))
        self.steps_total = steps_for(self.windows, max_delay)
        self.generator = make_generator(self.job.options.seed, torch.device(self.device))
        self.history = prompt

    @property
    def rows(self) -> int:
        """Decoder rows: 2 when guided (conditional, then unconditional), else 1."""
        return 2 if self.job.options.cfg_scale != 1.0 else 1

    @property
    def finished(self) -> bool:
        return self.index >= len(self.windows)

    @property
    def current(self) -> WindowSequence:
        if self.sequence is None:
            raise RuntimeError("the job has not started a window")
        return self.sequence

    def start_window(self) -> None:
        """Lay out the window `index`, prompted with the last frames so far (`iter_frames`)."""
        w = self.windows[self.index]
        self.sequence = WindowSequence(self.cfg, w.frames, self.rows, self._context(w), self.device)
        self.made = []

    def _context(self, w: Window) -> torch.Tensor | None:
        """The last `w.context` frames so far: what window `w` is prompted with."""
        if not w.context or self.history is None:
            return None
        return self.history[:, :, self.history.shape[-1] - w.context :]

    def logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Its rows' logits [rows, K, V] -> the logits it draws from [1, K, V] (guided)."""
        scale = self.job.options.cfg_scale
        return guide(logits, scale) if self.rows == 2 else logits

    def draw(self, logits: torch.Tensor) -> None:
        """Draw the next tokens from its rows' last logits [rows, K, V] with its own generator,
        write them, and keep the frame they complete; past a window's end, the next window
        (or the end)."""
        o = self.job.options
        tokens = sample(
            self.logits(logits),
            top_k=o.top_k,
            top_p=o.top_p,
            temperature=o.temperature,
            generator=self.generator,
        )
        block = self.current.take(tokens)
        self.made.append(block)
        self.out.append(block)
        self.steps_done += 1
        if self.current.finished:
            self._end_window()

    def _end_window(self) -> None:
        w = self.windows[self.index]
        keep = self.window - self.stride
        if keep:
            parts = [h for h in (self._context(w), *self.made) if h is not None]
            self.history = torch.cat(parts, dim=2)[:, :, -keep:]
        self.index += 1
        self.sequence = None
        if not self.finished:
            self.start_window()
