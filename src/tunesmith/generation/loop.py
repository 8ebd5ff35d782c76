"""The decode loop: prefill the known frames, then one decoder step per delayed position.

One window holds at most `max_duration` seconds. Longer pieces slide the window
(audiocraft's `extend_stride` scheme): each new window is prompted with the last
`window - stride` frames of what exists and adds up to `stride` new frames.

Everything is a generator of newly completed frames, so callers can stream audio, show
progress, or stop and keep what exists. Classifier-free guidance runs the conditional and
unconditional rows as one batch of 2B and mixes their logits. A window may open with a
`transition` (composed pieces: `generation.transition`): the previous text's rows run beside
the new one's until the blend is over.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from ..engine.step import Step, keep_rows
from ..options import GenerationOptions
from .condition import TextCondition
from .delay import apply_delay, delays, frame_views, valid_mask
from .sampling import sample, step_draw
from .transition import Transition

StepCallback = Callable[[int, int], None]  # (steps done, steps in all)


@dataclass(frozen=True)
class Window:
    """One decoder window: `context` frames given (prompt or previous output), `frames` in all."""

    context: int
    frames: int


def make_generator(seed: int | None, device: torch.device) -> torch.Generator:
    """A private random stream for one call: the same seed gives the same draws on a machine."""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def plan_windows(prompt: int, new: int, window: int, stride: int) -> list[Window]:
    """Windows that add `new` frames after a `prompt` of frames (prompt < window).

    >>> plan_windows(0, 3750, 1500, 900)  # 75 s at 50 Hz, 30 s window, 18 s stride
    [Window(context=0, frames=1500), Window(context=600, frames=1500), Window(context=600, frames=1500), Window(context=600, frames=1050)]
    """
    if not 0 < stride <= window:
        raise ValueError(f"stride must be in (0, window]: got {stride} for a window of {window}")
    if prompt >= window:
        raise ValueError(f"prompt of {prompt} frames does not fit a {window}-frame window")
    windows = [Window(prompt, min(window, prompt + new))]
    done = windows[0].frames - prompt
    keep = window - stride
    while done < new:
        context = min(keep, prompt + done)
        add = min(window - context, new - done)
        windows.append(Window(context, context + add))
        done += add
    return windows


def steps_for(windows: list[Window], max_delay: int) -> int:
    """Decoder steps the windows take in all (each window pays the delay tail once)."""
    return sum(w.frames - w.context + max_delay for w in windows)


@torch.inference_mode()
def iter_window(
    step: Step,
    text: TextCondition,
    frames: int,
    options: GenerationOptions,
    generator: torch.Generator,
    prompt: torch.Tensor | None = None,
    transition: Transition | None = None,
) -> Iterator[torch.Tensor]:
    """Sample one window; yield each newly completed frame as codes [B, K, 1].

    `prompt` [B, K, P] frames are given (not yielded); frames counts them too (P < frames).
    One decoder step per iteration (the first `max_delay` steps complete no frame).
    `transition`: blend the previous text's guided logits into this one's over its span.
    """
    cfg = step.lm.cfg
    device = text.states.device
    b, k = text.batch, cfg.num_codebooks
    shifts = delays(k, cfg.audio_channels)
    max_delay = max(shifts)
    length = 1 + frames + max_delay  # start frame + frames + the delay tail
    p = 0 if prompt is None else prompt.shape[-1]
    if p >= frames:
        raise ValueError(f"prompt has {p} frames; asked for {frames} in all")

    use_cfg = options.cfg_scale != 1.0
    blend = None if transition is None else transition.blend(b, options.cfg_scale)
    # Each block of B rows takes the same tokens: a guided batch's two halves, a blend's three.
    rows = blend.rows if blend is not None else (2 if use_cfg else 1) * b
    codes = torch.zeros(b, k, frames, dtype=torch.long, device=device)
    if prompt is not None:
        codes[:, :, :p] = prompt
    delayed = apply_delay(codes, cfg.special_token, cfg.audio_channels)  # [B, K, length]
    seq = delayed.repeat(rows // b, 1, 1)  # the step's input rows: [rows, K, length]
    live = seq  # the rows the step runs: all, until a blend's previous-text rows leave
    blocks = live.view(-1, b, k, length)
    # Positions to sample: real frames (not the delay's special padding) past the prompt.
    pos = torch.arange(length)[None, :]
    shift = torch.tensor(shifts)[:, None]
    writable = (valid_mask(k, length, cfg.audio_channels) & (pos >= 1 + shift + p)).to(device)
    every = writable.all(dim=0).tolist()  # positions where every codebook takes its token
    # Views made once, not a few ops a step: each position's column and one-frame input, and
    # each frame's codes as they complete (read from rows the step always writes).
    columns, inputs = live.unbind(2), live.split(1, dim=2)
    completed = frame_views(seq[:b] if blend is None else seq[b : 2 * b], cfg.audio_channels)

    condition = text if blend is None else blend.text(text)
    cache = step.new_cache(rows, length, condition.states, condition.mask)
    first = p + 1  # first position with anything to sample (codebook 0 right after the prompt)
    feed = live[:, :, :first]
    top_k, top_p, temperature = options.top_k, options.top_p, options.temperature
    draw = step_draw(top_k=top_k, top_p=top_p, temperature=temperature, generator=generator)
    scale = options.cfg_scale if use_cfg else None
    for position in range(first, length):
        if blend is not None and blend.over(position - first):
            # The blend is over: the previous text's rows leave the batch (and the cache).
            cache = keep_rows(cache, blend.kept, blend.kept_text)
            live = seq[blend.kept]
            blocks = live.view(-1, b, k, length)
            columns, inputs = live.unbind(2), live.split(1, dim=2)
            feed = live[:, :, :first] if position == first else inputs[position - 1]
            blend = None
        # The step draws the tokens itself where it can (one C++ call on a CPU, which also
        # writes them into the sequence), else the loop samples its logits (the step mixes
        # the guided halves: in C++ on a CPU).
        column = columns[position] if every[position] else None
        tokens = None
        if draw is not None and blend is None:
            tokens = step.drawn(feed, cache, scale, draw, column)
        written = tokens is not None and column is not None
        if tokens is None:
            # Contiguous, as a compiled step was traced with (a view's strides change with
            # the window's length).
            frames_in = feed.contiguous()
            if blend is not None:
                logits = blend.logits(step(frames_in, cache)[:, :, -1], position - first)
            elif scale is not None:
                logits = step.guided(frames_in, cache, scale)
            else:
                logits = step(frames_in, cache)[:, :, -1]  # [B, K, V]
            tokens = sample(
                logits, top_k=top_k, top_p=top_p, temperature=temperature, generator=generator
            )
        if not written:
            keep = blocks[0, :, :, position]
            mixed = tokens if every[position] else torch.where(writable[:, position], tokens, keep)
            blocks[:, :, :, position] = mixed
        feed = inputs[position]
        frame = position - 1 - max_delay  # the frame whose last codebook was just written
        if frame >= p:
            block = completed[frame]
            yield block if block.dim() == 3 else block.flatten(1, 2)
        else:
            yield seq.new_empty(b, k, 0)


def iter_frames(
    step: Step,
    text: TextCondition,
    new_frames: int,
    options: GenerationOptions,
    *,
    window: int,
    stride: int,
    prompt: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    on_step: StepCallback | None = None,
    transition: Transition | None = None,
) -> Iterator[torch.Tensor]:
    """Yield `new_frames` new frames in order (blocks [B, K, n], n >= 0), across as many windows
    as it takes, continuing `prompt` codes [B, K, P] if given; `transition` blends the
    previous text in over the first new frames' steps (in as many windows as it spans)."""
    device = text.states.device
    generator = generator if generator is not None else make_generator(options.seed, device)
    p = 0 if prompt is None else prompt.shape[-1]
    windows = plan_windows(p, new_frames, window, stride)
    cfg = step.lm.cfg
    max_delay = max(delays(cfg.num_codebooks, cfg.audio_channels))
    total, done = steps_for(windows, max_delay), 0
    keep = window - stride
    # The last frames so far (prompt included): what the next window is prompted with.
    history = prompt if prompt is not None else text.states.new_zeros(0, dtype=torch.long)
    new = 0  # new frames made before this window
    for w in windows:
        context = history[:, :, history.shape[-1] - w.context :] if w.context else None
        span = None if transition is None else transition.later(new)
        made = []
        window_blocks = iter_window(
            step, text, w.frames, options, generator, prompt=context, transition=span
        )
        for block in window_blocks:
            made.append(block)
            done += 1
            if on_step is not None:
                on_step(done, total)
            yield block
        new += w.frames - w.context
        if keep:
            history = torch.cat([h for h in (context, *made) if h is not None], dim=2)[:, :, -keep:]


def generate_codes(
    step: Step,
    text: TextCondition,
    frames: int,
    options: GenerationOptions,
    *,
    prompt: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    on_step: StepCallback | None = None,
    window: int | None = None,
    stride: int | None = None,
) -> torch.Tensor:
    """Sample codes [B, K, frames]; with a prompt [B, K, P] the result starts with it (P < frames).

    Without `window`, everything happens in one window (frames must fit the model's cache).
    """
    p = 0 if prompt is None else prompt.shape[-1]
    window = window or frames
    blocks = iter_frames(
        step,
        text,
        frames - p,
        options,
        window=window,
        stride=stride or window,
        prompt=prompt,
        generator=generator,
        on_step=on_step,
    )
    parts = ([] if prompt is None else [prompt]) + list(blocks)
    return torch.cat(parts, dim=2)
