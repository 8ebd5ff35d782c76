import pytest
import torch

from tunesmith.engine.step import guide as cfg_mix
from tunesmith.generation.sampling import sample, top_k_filter, top_p_filter


def test_cfg_mix_formula() -> None:
    cond, uncond = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    mixed = cfg_mix(torch.cat([cond, uncond]), 3.0)
    torch.testing.assert_close(mixed, uncond + 3.0 * (cond - uncond))


def test_top_k_one_is_argmax_without_randomness() -> None:
    logits = torch.randn(4, 4, 2048)
    assert torch.equal(sample(logits, top_k=1, top_p=0.0, temperature=1.0), logits.argmax(-1))


@pytest.mark.parametrize("k", [1, 5, 250])
def test_top_k_matches_transformers(k: int) -> None:
    from transformers.generation.logits_process import TopKLogitsWarper

    logits = torch.randn(8, 2048)
    want = TopKLogitsWarper(top_k=k)(None, logits.clone())
    assert torch.equal(top_k_filter(logits, k), want)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9, 0.99])
def test_top_p_matches_transformers(p: float) -> None:
    from transformers.generation.logits_process import TopPLogitsWarper

    logits = torch.randn(8, 2048) * 3
    want = TopPLogitsWarper(top_p=p)(None, logits.clone())
    assert torch.equal(top_p_filter(logits, p), want)


def test_sampling_respects_filters_and_seed() -> None:
    logits = torch.randn(16, 2048)
    allowed = torch.topk(logits, 3).indices
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    a = sample(logits, top_k=3, top_p=0.0, temperature=1.5, generator=g1)
    b = sample(logits, top_k=3, top_p=0.0, temperature=1.5, generator=g2)
    assert torch.equal(a, b)
    assert (allowed == a[:, None]).any(dim=1).all()


def test_tiny_temperatures_draw_the_likeliest_token_instead_of_failing() -> None:
    """{"temperature": 1e-45} was accepted by the server and then failed the job (NaN)."""
    logits = torch.randn(3, 4, 2048) * 5
    for temperature in (1e-45, 1e-30, 1e-5):
        tokens = sample(logits, top_k=250, top_p=0.0, temperature=temperature)
        assert torch.equal(tokens, logits.argmax(dim=-1))
    tokens = sample(logits, top_k=0, top_p=0.9, temperature=1e-45)
    assert torch.equal(tokens, logits.argmax(dim=-1))
