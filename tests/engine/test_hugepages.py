"""Streamed weights moved into one huge-page mapping keep their values and stay usable."""

from __future__ import annotations

import torch
from torch import nn

from tunesmith.engine.hugepages import HUGE_PAGE, move_to_huge_pages


def test_moved_tensors_keep_their_values_and_modules_keep_working() -> None:
    layers = [nn.Linear(64, 48, bias=False), nn.Linear(48, 8, bias=False)]
    buffers = nn.Module()
    buffers.register_buffer("table", torch.randint(-127, 128, (5, 7), dtype=torch.int8))
    before = [layer.weight.detach().clone() for layer in layers] + [buffers.table.clone()]
    x = torch.randn(3, 64)
    want = layers[1](layers[0](x))
    owners = [(layers[0], "weight"), (layers[1], "weight"), (buffers, "table")]
    if not move_to_huge_pages(owners):  # not Linux: nothing moved, nothing to check
        return
    after = [layers[0].weight, layers[1].weight, buffers.table]
    for old, new in zip(before, after, strict=True):
        assert torch.equal(old, new) and new.is_contiguous()
        assert new.data_ptr() % 64 == 0
    assert after[0].data_ptr() % HUGE_PAGE == 0  # the first starts on a huge page
    assert isinstance(layers[0].weight, nn.Parameter)
    assert "table" in dict(buffers.named_buffers())
    assert torch.equal(layers[1](layers[0](x)), want)


def test_nothing_to_move() -> None:
    assert not move_to_huge_pages([])
