"""One batch of jobs, generated: the live audio chunks for /stream listeners as soon as
each can be decoded, and at the end the whole code sequence decoded at once, exactly as the
CLI decodes it, so the file a job keeps is the CLI's, sample for sample."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from ..generation.codec_chunks import StreamDecoder
from ..musicgen import DECODE_CONTEXT, STREAM_LOOKAHEAD

if TYPE_CHECKING:
    from ..musicgen import MusicGen
    from ..options import GenerationOptions


def generate(
    model: MusicGen,
    prompts: list[str | None],
    options: GenerationOptions,
    *,
    chunk_seconds: float,
    on_step: Callable[[int, int], None],
    on_chunk: Callable[[torch.Tensor], None],
    inputs: dict[str, Any],
) -> torch.Tensor:
    """Audio [B, C, N] for the prompts (an audio prompt's own audio first, as the CLI keeps
    it), while every `chunk_seconds` of it goes to `on_chunk` ([B, C, n]) as it is made."""
    decoder = StreamDecoder(
        model.decode, model.config.audio_encoder.hop_length, chunk=model.frames_for(chunk_seconds),
        lookahead=STREAM_LOOKAHEAD, context=DECODE_CONTEXT,
    )  # fmt: skip
    codes: list[torch.Tensor] = []

    def add(block: torch.Tensor) -> None:
        codes.append(block)
        for chunk in decoder.push(block):
            on_chunk(chunk)

    with model.token_stream(prompts, options, progress=on_step, **inputs) as blocks:
        if blocks.prompt is not None:
            add(blocks.prompt)
        for block in blocks:
            add(block)
    tail = decoder.finish()
    if tail is not None:
        on_chunk(tail)
    return model.decode(torch.cat(codes, dim=2))
