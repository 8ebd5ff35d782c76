"""The decode loop: prefill the known frames, then one decoder step per delayed position.

A call decodes one window of at most `max_duration` seconds. Classifier-free guidance runs
the conditional and unconditional rows as one batch of 2B and mixes their logits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .delay import apply_delay, delays, undo_delay, valid_mask
from .models.lm import MusicGenLM
from .options import GenerationOptions
from .sampling import cfg_mix, sample

StepCallback = Callable[[int, int], None]  # (steps done, steps in all)


@dataclass(frozen=True)
class TextCondition:
    """Projected text states [B, S, D] and mask [B, S]; an all-zero row is unconditional."""

    states: torch.Tensor
    mask: torch.Tensor

    @property
    def batch(self) -> int:
        return self.states.shape[0]


def make_generator(seed: int | None, device: torch.device) -> torch.Generator:
    """A private random stream for one call: the same seed gives the same draws on a machine."""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


@torch.inference_mode()
def generate_codes(
    lm: MusicGenLM,
    text: TextCondition,
    frames: int,
    options: GenerationOptions,
    *,
    prompt: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """Sample `frames` frames of codes [B, K, frames], continuing `prompt` codes [B, K, P] if given.

    The returned codes include the prompt's frames (frames counts them too), so P < frames.
    """
    cfg = lm.cfg
    device = text.states.device
    b, k = text.batch, cfg.num_codebooks
    shifts = delays(k, cfg.audio_channels)
    length = 1 + frames + max(shifts)  # start frame + frames + the delay tail
    p = 0 if prompt is None else prompt.shape[-1]
    if p >= frames:
        raise ValueError(f"prompt has {p} frames; asked for {frames} in all")

    codes = torch.zeros(b, k, frames, dtype=torch.long, device=device)
    if prompt is not None:
        codes[:, :, :p] = prompt
    seq = apply_delay(codes, cfg.special_token, cfg.audio_channels)  # [B, K, length]
    # Positions to sample: real frames (not the delay's special padding) past the prompt.
    pos = torch.arange(length)[None, :]
    shift = torch.tensor(shifts)[:, None]
    writable = (valid_mask(k, length, cfg.audio_channels) & (pos >= 1 + shift + p)).to(device)

    use_cfg = options.cfg_scale != 1.0
    rows = 2 * b if use_cfg else b
    cache = lm.new_cache(rows, length, text.states, text.mask)
    generator = generator if generator is not None else make_generator(options.seed, device)

    first = p + 1  # first position with anything to sample (codebook 0 right after the prompt)
    feed = seq[:, :, :first]
    total = length - first
    for step, position in enumerate(range(first, length)):
        inputs = torch.cat([feed, feed]) if use_cfg else feed
        logits = lm(inputs, cache)[:, :, -1]  # [rows, K, V]
        if use_cfg:
            logits = cfg_mix(logits, options.cfg_scale)
        tokens = sample(
            logits,
            top_k=options.top_k,
            top_p=options.top_p,
            temperature=options.temperature,
            generator=generator,
        )
        column = seq[:, :, position]
        seq[:, :, position] = torch.where(writable[:, position], tokens, column)
        feed = seq[:, :, position : position + 1]
        if on_step is not None:
            on_step(step + 1, total)
    return undo_delay(seq, cfg.audio_channels)
