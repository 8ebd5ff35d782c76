"""The decoder against transformers' MusicgenForCausalLM: logits, cache, masking."""

from __future__ import annotations

import pytest
import torch

from tunesmith.engine.prepare import fuse
from tunesmith.models.lm import sinusoidal_positions


def hf_logits(decoder, tokens, text, mask):
    b, k, t = tokens.shape
    out = decoder(
        input_ids=tokens.reshape(b * k, t), encoder_hidden_states=text, encoder_attention_mask=mask
    )
    return out.logits.reshape(b, k, t, -1)


def test_positions_match_reference_table(decoder_pair) -> None:
    decoder, _ = decoder_pair
    table = decoder.model.decoder.embed_positions.weights
    ours = sinusoidal_positions(torch.arange(table.shape[0]), table.shape[1])
    torch.testing.assert_close(ours, table, rtol=0, atol=1e-6)


@torch.no_grad()
def test_full_forward_logits_match(decoder_pair) -> None:
    decoder, ours = decoder_pair
    torch.manual_seed(0)
    tokens = torch.randint(0, 2049, (2, 4, 9))
    text = torch.randn(2, 5, 48)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    text = text * mask[..., None]
    want = hf_logits(decoder, tokens, text, mask)
    cache = ours.new_cache(2, 16, text, mask)
    got = ours(tokens, cache)
    assert got.shape == want.shape
    assert (got - want).abs().max() < 1e-4


@torch.no_grad()
def test_cached_steps_equal_full_forward(decoder_pair) -> None:
    _, ours = decoder_pair
    torch.manual_seed(1)
    tokens = torch.randint(0, 2049, (2, 4, 8))
    text = torch.randn(2, 3, 48)
    mask = torch.ones(2, 3, dtype=torch.long)
    full = ours(tokens, ours.new_cache(2, 8, text, mask))
    cache = ours.new_cache(2, 8, text, mask)
    parts = [ours(tokens[:, :, :3], cache)]  # prefill 3, then one frame at a time
    parts += [ours(tokens[:, :, i : i + 1], cache) for i in range(3, 8)]
    assert cache.length == 8
    assert (
        torch.cat(parts, dim=2) - full
    ).abs().max() < 1e-4  # logits are O(10): 1e-4 is ~1e-5 relative


@torch.no_grad()
def test_prefill_after_cached_frames_uses_causal_offsets(decoder_pair) -> None:
    _, ours = decoder_pair
    tokens = torch.randint(0, 2049, (1, 4, 7))
    text, mask = torch.randn(1, 2, 48), torch.ones(1, 2, dtype=torch.long)
    full = ours(tokens, ours.new_cache(1, 7, text, mask))
    cache = ours.new_cache(1, 7, text, mask)
    got = torch.cat([ours(tokens[:, :, :2], cache), ours(tokens[:, :, 2:], cache)], dim=2)
    assert (got - full).abs().max() < 1e-4  # logits are O(10): 1e-4 is ~1e-5 relative


@torch.no_grad()
def test_unconditional_rows_match_reference_zero_text(decoder_pair) -> None:
    """Rows past `cross_rows` equal the reference given a zero text state and zero mask."""
    decoder, ours = decoder_pair
    tokens = torch.randint(0, 2049, (2, 4, 4))
    text = torch.randn(1, 3, 48)
    mask = torch.ones(1, 3, dtype=torch.long)
    hf_text = torch.cat([text, torch.zeros_like(text)])
    hf_mask = torch.cat([mask, torch.zeros_like(mask)])
    want = hf_logits(decoder, tokens, hf_text, hf_mask)
    got = ours(tokens, ours.new_cache(2, 4, text, mask))
    assert (got - want).abs().max() < 1e-4


def test_cache_overflow_is_an_error(decoder_pair) -> None:
    _, ours = decoder_pair
    cache = ours.new_cache(1, 2, torch.zeros(1, 1, 48), torch.ones(1, 1))
    with pytest.raises(RuntimeError, match="KV cache"):
        ours(torch.zeros(1, 4, 3, dtype=torch.long), cache)


@torch.no_grad()
@pytest.mark.parametrize("fused", [False, True])
def test_static_step_equals_the_dynamic_step(decoder_pair, fused: bool) -> None:
    """The fixed-shape step the CUDA graphs replay (position as a tensor, attention over the
    whole buffer with later frames masked) gives the eager step's logits and KV cache, here
    with padded text and an unconditional third row."""
    import copy

    _, ours = decoder_pair
    lm = ours
    if fused:
        lm = copy.deepcopy(ours)
        fuse(lm)
    torch.manual_seed(2)
    tokens = torch.randint(0, 2049, (3, 4, 7))
    text, mask = torch.randn(2, 5, 48), torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    eager, static = lm.new_cache(3, 7, text, mask), lm.new_cache(3, 7, text, mask)
    lm(tokens[:, :, :2], eager)
    lm(tokens[:, :, :2], static)
    lm.prepare_static(static)
    for i in range(2, 7):
        want = lm(tokens[:, :, i : i + 1], eager)
        got = lm.static_step(tokens[:, :, i : i + 1], torch.tensor([static.length]), static)
        static.length += 1
        assert (got - want).abs().max() < 1e-4
    for a, b in zip(eager.layers, static.layers, strict=True):
        assert torch.allclose(a.self_k, b.self_k, atol=1e-5)
        assert torch.allclose(a.self_v, b.self_v, atol=1e-5)
