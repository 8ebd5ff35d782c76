"""Zeroed CPU tensors in an anonymous memory mapping of their own.

A KV cache lives for one generation and is large (0.1-0.2 GB for 10 s of musicgen-small).
From torch's allocator it may come out of free space in glibc's heap (loading leaves plenty),
and go back there when freed, still counted in the process's resident memory. A mapping of
its own reads as zeros without being written (the kernel hands out zeroed pages as they are
first touched, so the cache grows in memory with the piece), and is unmapped as soon as the
last tensor viewing it is gone.
"""

from __future__ import annotations

import math
import mmap

import torch


def mapped_zeros(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A zero tensor of `shape` in a fresh anonymous mapping; `torch.zeros` where such a
    mapping cannot be made (no MAP_ANONYMOUS on this platform, or the map fails)."""
    size = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
    flags = getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_ANONYMOUS", 0)
    if size == 0 or not hasattr(mmap, "MAP_ANONYMOUS"):
        return torch.zeros(shape, dtype=dtype)
    try:
        mapping = mmap.mmap(-1, size, flags=flags)
    except (OSError, ValueError):
        return torch.zeros(shape, dtype=dtype)
    # The tensor keeps the mapping alive; the mapping goes when the tensor (and its views) do.
    return torch.frombuffer(mapping, dtype=dtype).view(shape)
