"""The delay pattern: codebook k is shifted right by its delay so that, at each decoder step,
finer codebooks are predicted after the coarser ones of the same frame.

Worked example, mono (delay of codebook k is k), K = 4 codebooks, T = 3 frames a b c
(`a0` is frame a of codebook 0), `S` the special token (id = vocab size):

    position   0   1   2   3   4   5   6
    k = 0      S  a0  b0  c0   S   S   S
    k = 1      S   S  a1  b1  c1   S   S
    k = 2      S   S   S  a2  b2  c2   S
    k = 3      S   S   S   S  a3  b3  c3

Position 0 is the all-special start frame. T frames need T + max_delay decoder steps, and a
sequence of L positions holds L - 1 - max_delay frames. Undo: codes[k, t] = seq[k, t + 1 + delay_k].

Stereo checkpoints interleave two 4-codebook streams (left, right): codebooks 2c and 2c + 1
share delay c, so `delays(8, channels=2)` is [0, 0, 1, 1, 2, 2, 3, 3].
"""

from __future__ import annotations

import torch


def delays(num_codebooks: int, channels: int = 1) -> list[int]:
    """The shift of each codebook: k for mono, k // 2 for interleaved stereo."""
    return [k // channels for k in range(num_codebooks)]


def apply_delay(codes: torch.Tensor, special: int, channels: int = 1) -> torch.Tensor:
    """codes [B, K, T] -> delayed sequence [B, K, 1 + T + max_delay] with the start frame."""
    b, k, t = codes.shape
    shifts = delays(k, channels)
    seq = codes.new_full((b, k, 1 + t + max(shifts)), special)
    for i, d in enumerate(shifts):
        seq[:, i, 1 + d : 1 + d + t] = codes[:, i]
    return seq


def undo_delay(seq: torch.Tensor, channels: int = 1) -> torch.Tensor:
    """Delayed sequence [B, K, L] (start frame included) -> codes [B, K, L - 1 - max_delay]."""
    _, k, length = seq.shape
    shifts = delays(k, channels)
    t = length - 1 - max(shifts)
    if t < 0:
        raise ValueError(f"a sequence of {length} positions holds no complete frame")
    return torch.stack([seq[:, i, 1 + d : 1 + d + t] for i, d in enumerate(shifts)], dim=1)


def valid_mask(num_codebooks: int, length: int, channels: int = 1) -> torch.Tensor:
    """[K, L] bool: True where position p of codebook k holds a real frame (not special)."""
    shifts = torch.tensor(delays(num_codebooks, channels))[:, None]
    frames = length - 1 - int(shifts.max())
    p = torch.arange(length)[None, :]
    return (p >= 1 + shifts) & (p < 1 + shifts + frames)


def frame_views(seq: torch.Tensor, channels: int = 1) -> list[torch.Tensor]:
    """Each complete frame of a delayed sequence [B, K, L] as a view of it (no copy: it reads
    the values the sequence holds when it is read): codes [B, K, 1] for mono; for stereo
    [B, K/2, 2, 1] (a codebook pair's positions are one stride apart, the pairs another), to
    be flattened when read."""
    b, k, length = seq.shape
    frames = length - 1 - max(delays(k, channels))
    s0, s1, s2 = seq.stride()
    shape, strides = (b, k // channels, channels, 1), (s0, channels * s1 + s2, s1, s2)
    views = [
        seq.as_strided(shape, strides, seq.storage_offset() + (t + 1) * s2) for t in range(frames)
    ]
    return [v.view(b, k, 1) for v in views] if channels == 1 else views
