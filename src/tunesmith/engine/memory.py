"""Memory handed back to the operating system when a piece no longer needs it.

glibc keeps what a process frees in its heap, still resident: the transients of loading a
checkpoint, and of each codec decode (~0.2 GB at 10 s), would otherwise stay counted in the
process's memory and add up under the next generation's KV cache.

- `mapped_zeros`: a KV cache (0.1-0.2 GB for 10 s of musicgen-small) in an anonymous mapping
  of its own. It reads as zeros without being written (the kernel hands out zeroed pages as
  they are first touched, so the cache grows in memory with the piece), and is unmapped as
  soon as the last tensor viewing it is gone.
- `release_freed_memory`: glibc's `malloc_trim`, after loading and after each decode.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import mmap
import sys

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


def mapped_kv_buffers(
    layers: int, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Zeroed keys and values of `shape` for each layer (a `CacheLayout.allocate`): on a CPU
    views of one anonymous mapping (`mapped_zeros`), whose pages are taken as frames are
    written and given back when the generation ends, where heap blocks would stay resident
    afterwards, under the codec decode's own peak (~0.1-0.2 GB at 10 s)."""
    if device.type != "cpu":
        return [
            (
                torch.zeros(shape, device=device, dtype=dtype),
                torch.zeros(shape, device=device, dtype=dtype),
            )
            for _ in range(layers)
        ]
    whole = mapped_zeros((layers, 2, *shape), dtype)
    return [(whole[i, 0], whole[i, 1]) for i in range(layers)]


def release_freed_memory() -> None:
    """Give the heap's free pages back to the OS (glibc's malloc_trim; a few ms). Elsewhere
    (not Linux, not glibc) nothing happens."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
