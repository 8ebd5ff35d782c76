"""The T5 encoder against transformers' T5EncoderModel: same weights, same hidden states."""

from __future__ import annotations

import pytest
import torch

from tunesmith.checkpoints.hub_keys import hf_to_tunesmith, strip_prefix
from tunesmith.config import T5Config
from tunesmith.models.t5 import T5Encoder, relative_position_buckets

VOCAB = 150
ATOL = 1e-4


@pytest.fixture(scope="module")
def hf_encoder():
    from transformers import T5Config as HFT5Config
    from transformers import T5EncoderModel

    torch.manual_seed(0)
    cfg = HFT5Config(
        vocab_size=VOCAB,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        feed_forward_proj="relu",
        attn_implementation="eager",  # the plain reference math, not another SDPA call
    )
    model = T5EncoderModel(cfg).eval()
    # Random init leaves the bias table and norms near trivial values: make them count.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "relative_attention_bias" in name:
                param.normal_(0.0, 1.0)
            elif "layer_norm" in name:
                param.uniform_(0.5, 1.5)
    return model


def convert(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    prefixed = {f"text_encoder.{k}": v for k, v in state.items()}
    return strip_prefix(hf_to_tunesmith(prefixed), "text_encoder.")


@pytest.fixture(scope="module")
def ours(hf_encoder) -> T5Encoder:
    model = T5Encoder(T5Config.from_hf(hf_encoder.config.to_dict()))
    # state_dict() carries both tied copies (shared.weight and encoder.embed_tokens.weight).
    model.load_state_dict(convert(hf_encoder.state_dict()), strict=True)
    return model.eval()


def max_diff_where_kept(ours, hf, ids: torch.Tensor, mask: torch.Tensor) -> float:
    with torch.no_grad():
        got = ours(ids, mask)
        want = hf(input_ids=ids, attention_mask=mask).last_hidden_state
    assert got.shape == want.shape == (*ids.shape, 32)
    keep = mask.bool()
    return (got[keep] - want[keep]).abs().max().item()


def test_padded_batch_matches_transformers(hf_encoder, ours) -> None:
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(3, VOCAB, (2, 12), generator=gen)
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 7:] = 0
    ids[1, 7:] = 0
    assert max_diff_where_kept(ours, hf_encoder, ids, mask) < ATOL
    # Padding must not leak into the kept positions: the short row alone gives the same.
    with torch.no_grad():
        alone = ours(ids[1:, :7], mask[1:, :7])
        batched = ours(ids, mask)[1:, :7]
    torch.testing.assert_close(batched, alone, rtol=0, atol=ATOL)


def test_long_sequence_matches_transformers(hf_encoder, ours) -> None:
    # S = 150 > max_distance 128: exercises the logarithmic buckets and their clamp.
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(3, VOCAB, (1, 150), generator=gen)
    mask = torch.ones_like(ids)
    assert max_diff_where_kept(ours, hf_encoder, ids, mask) < ATOL


def test_buckets_match_transformers() -> None:
    from transformers.models.t5.modeling_t5 import T5Attention

    pos = torch.arange(300)
    rel = pos[None, :] - pos[:, None]
    for num_buckets, max_distance in [(32, 128), (16, 20)]:
        want = T5Attention._relative_position_bucket(
            rel, bidirectional=True, num_buckets=num_buckets, max_distance=max_distance
        )
        got = relative_position_buckets(300, num_buckets, max_distance)
        assert torch.equal(got, want)
        assert got.min() == 0 and got.max() == num_buckets - 1


def test_tied_embedding_only_encoder_copy_loads(hf_encoder, ours) -> None:
    state = dict(hf_encoder.state_dict())
    embedding = state.pop("shared.weight")
    state["encoder.embed_tokens.weight"] = embedding
    model = T5Encoder(ours.cfg)
    model.load_state_dict(convert(state), strict=True)
    assert torch.equal(model.embed_tokens.weight, embedding)


def test_tied_embedding_only_shared_copy_loads(hf_encoder, ours) -> None:
    # What transformers' save_pretrained writes: the tied encoder copy is dropped.
    state = dict(hf_encoder.state_dict())
    del state["encoder.embed_tokens.weight"]
    model = T5Encoder(ours.cfg)
    model.load_state_dict(convert(state), strict=True)
    assert torch.equal(model.embed_tokens.weight, hf_encoder.shared.weight)
