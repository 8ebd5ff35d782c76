"""The engine's preparation of a decoder (`prepare.fuse`): the same logits from repacked
weights."""

from __future__ import annotations

import torch

from tunesmith.engine.prepare import fuse


@torch.no_grad()
def test_fused_qkv_gives_the_same_logits(decoder_pair) -> None:
    import copy

    _, ours = decoder_pair
    fused = copy.deepcopy(ours)
    fuse(fused)
    tokens = torch.randint(0, 2049, (2, 4, 6))
    text, mask = torch.randn(2, 3, 48), torch.ones(2, 3, dtype=torch.long)
    want = ours(tokens, ours.new_cache(2, 6, text, mask))
    got = fused(tokens, fused.new_cache(2, 6, text, mask))
    assert (got - want).abs().max() < 1e-4
