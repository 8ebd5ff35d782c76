"""Weights that every decoder step streams, moved into 2 MiB pages (Linux huge pages).

A CPU decoder step reads all its weights once (0.35 GB as int8): with 4 KiB pages that is
~90,000 TLB misses a step, each a page walk while the kernel waits for data. Linux backs an
anonymous mapping with 2 MiB pages where asked (`madvise(MADV_HUGEPAGE)`, honoured when
transparent huge pages are in `madvise` or `always` mode): here that took ~0.5-1 ms off a
~21 ms int8 step (benchmarks/bench_step.py). Elsewhere, or if the mapping fails, tensors
stay where they are.
"""

from __future__ import annotations

import contextlib
import mmap
from collections.abc import Sequence
from typing import cast

import torch
from torch import nn

HUGE_PAGE = 2 << 20
ALIGN = 64  # bytes: each tensor starts on a cache line


def move_to_huge_pages(owners: Sequence[tuple[nn.Module, str]]) -> bool:
    """Move each `getattr(module, name)` (a contiguous CPU tensor or parameter) into one
    huge-page mapping, side by side, one at a time (each old copy can go as soon as it is
    replaced). False, with nothing moved, where that is not available."""
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    tensors = [cast(torch.Tensor, getattr(module, name)) for module, name in owners]
    if not tensors or advice is None or any(t.device.type != "cpu" for t in tensors):
        return False
    sizes = [t.numel() * t.element_size() for t in tensors]
    del tensors
    total = sum(_aligned(size) for size in sizes) + HUGE_PAGE
    try:
        mapping = mmap.mmap(-1, total, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        with contextlib.suppress(OSError):  # no THP support: plain pages, still correct
            mapping.madvise(advice)
    except (OSError, ValueError):
        return False
    arena = torch.frombuffer(mapping, dtype=torch.uint8)  # the views keep the mapping alive
    offset = -arena.data_ptr() % HUGE_PAGE  # the first huge page boundary
    for (module, name), size in zip(owners, sizes, strict=True):
        old = cast(torch.Tensor, getattr(module, name))
        place = arena[offset : offset + size].view(old.dtype).view(old.shape)
        place.copy_(old)
        if isinstance(old, nn.Parameter):
            place = nn.Parameter(place, requires_grad=False)
        setattr(module, name, place)
        offset += _aligned(size)
    return True


def _aligned(size: int) -> int:
    return -(-size // ALIGN) * ALIGN
