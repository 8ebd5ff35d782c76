"""Memory given back: zeroed tensors in a mapping of their own (the CPU step's KV caches)."""

from __future__ import annotations

import gc

import torch

from tunesmith.engine.memory import mapped_zeros, release_freed_memory


def test_mapped_zeros_read_as_zeros_and_take_writes() -> None:
    t = mapped_zeros((3, 2, 5), torch.float16)
    assert t.shape == (3, 2, 5) and t.dtype == torch.float16 and t.is_contiguous()
    assert torch.equal(t, torch.zeros(3, 2, 5, dtype=torch.float16))
    t[1, 0] = 2.5
    view = t[1]
    del t
    gc.collect()
    assert float(view[0, 4]) == 2.5  # a view keeps the mapping alive


def test_empty_shapes_need_no_mapping() -> None:
    assert mapped_zeros((0, 4), torch.float32).shape == (0, 4)


def test_release_freed_memory_is_harmless() -> None:
    kept = torch.ones(1000)
    release_freed_memory()
    assert float(kept.sum()) == 1000.0
