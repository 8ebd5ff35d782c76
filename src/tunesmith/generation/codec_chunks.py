"""Decoding long or growing code sequences in overlapping chunks.

EnCodec's decoder is not causal (its convolutions look ahead, its LSTM carries state), so a
chunk is decoded with `context` frames of codes on each side and only its middle is kept. The
result differs from one whole decode by far less than the codec's own error (tests hold it
above 40 dB SNR), and memory stays bounded by the chunk size, not the piece's length.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Decode = Callable[[torch.Tensor], torch.Tensor]  # codes [B, K, T] -> wav [B, C, T * hop]


def decode_in_chunks(
    decode: Decode, codes: torch.Tensor, hop: int, chunk: int = 1500, context: int = 50
) -> torch.Tensor:
    """Decode codes [B, K, T] chunk by chunk; one plain decode when T <= chunk."""
    total = codes.shape[-1]
    if total <= chunk:
        return decode(codes)
    parts = []
    for start in range(0, total, chunk):
        end = min(total, start + chunk)
        left, right = max(0, start - context), min(total, end + context)
        wav = decode(codes[..., left:right])
        parts.append(wav[..., (start - left) * hop : (end - left) * hop])
    return torch.cat(parts, dim=-1)


class StreamDecoder:
    """Turns code frames arriving a few at a time into audio chunks as soon as they are safe.

    A chunk of `chunk` frames is decoded once `lookahead` more frames exist after it, with
    `context` frames before it; `finish()` decodes whatever is left.
    """

    def __init__(
        self, decode: Decode, hop: int, chunk: int, lookahead: int = 25, context: int = 50
    ) -> None:
        if chunk < 1:
            raise ValueError(f"chunk must be at least one frame, got {chunk}")
        self.decode, self.hop = decode, hop
        self.chunk, self.lookahead, self.context = chunk, lookahead, context
        self.codes: torch.Tensor | None = None  # [B, K, frames since `offset`]
        self.offset = 0  # absolute index of codes[..., 0]
        self.emitted = 0  # frames already turned into audio

    def push(self, block: torch.Tensor) -> list[torch.Tensor]:
        """Add frames [B, K, n]; return the audio chunks [B, C, samples] now ready."""
        if block.shape[-1] == 0:
            return []
        self.codes = block if self.codes is None else torch.cat([self.codes, block], dim=-1)
        ready = []
        while self._available() >= self.emitted + self.chunk + self.lookahead:
            ready.append(
                self._emit(self.emitted + self.chunk, self.emitted + self.chunk + self.lookahead)
            )
        return ready

    def skip(self, block: torch.Tensor) -> None:
        """Add frames [B, K, n] that serve as context only: their audio is never emitted."""
        self.codes = block if self.codes is None else torch.cat([self.codes, block], dim=-1)
        self.emitted = self._available()

    def finish(self) -> torch.Tensor | None:
        """Audio for every frame not yet emitted (None if there is none)."""
        end = self._available()
        if self.codes is None or end <= self.emitted:
            return None
        return self._emit(end, end)

    def _available(self) -> int:
        return self.offset + (0 if self.codes is None else self.codes.shape[-1])

    def _emit(self, end: int, right: int) -> torch.Tensor:
        assert self.codes is not None
        left = max(self.offset, self.emitted - self.context)
        wav = self.decode(self.codes[..., left - self.offset : right - self.offset])
        out = wav[..., (self.emitted - left) * self.hop : (end - left) * self.hop]
        self.emitted = end
        # Drop codes no later chunk will need as context.
        drop = max(0, self.emitted - self.context - self.offset)
        self.codes, self.offset = self.codes[..., drop:], self.offset + drop
        return out
