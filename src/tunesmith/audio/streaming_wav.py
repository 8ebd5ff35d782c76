"""Audio sinks for streamed output: a WAV file valid at every moment, or raw PCM on a pipe."""

from __future__ import annotations

import sys
import wave
from typing import BinaryIO, Protocol

import numpy as np
import torch


def to_pcm16(chunk: torch.Tensor) -> bytes:
    """[C, n] float in [-1, 1] -> interleaved little-endian 16-bit PCM."""
    data = chunk.detach().float().clamp(-1.0, 1.0).cpu().numpy().T  # [n, C]
    return (np.round(data * 32767.0)).astype("<i2").tobytes()


class AudioSink(Protocol):
    def write(self, chunk: torch.Tensor) -> None: ...
    def close(self) -> None: ...


class ProgressiveWav:
    """16-bit WAV whose header is rewritten after every chunk (the stdlib `wave` module patches
    the sizes on each write), so a player or a reader sees a valid file at any moment."""

    def __init__(self, path: str, sample_rate: int, channels: int) -> None:
        self.file = open(path, "wb")  # noqa: SIM115 (closed in close())
        self.wav = wave.open(self.file, "wb")  # noqa: SIM115
        self.wav.setnchannels(channels)
        self.wav.setsampwidth(2)
        self.wav.setframerate(sample_rate)
        self.wav.writeframes(b"")  # header now, even before the first chunk
        self.file.flush()

    def write(self, chunk: torch.Tensor) -> None:
        self.wav.writeframes(to_pcm16(chunk))
        self.file.flush()

    def close(self) -> None:
        self.wav.close()
        self.file.close()


class RawPcm:
    """Interleaved s16le PCM to a byte stream (stdout by default), for piping into a player."""

    def __init__(self, stream: BinaryIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout.buffer

    def write(self, chunk: torch.Tensor) -> None:
        self.stream.write(to_pcm16(chunk))
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()
