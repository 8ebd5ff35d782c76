"""Sampling's CPU ops against torch: the same k-th-largest filter, and torch.multinomial's
index with the generator left where torch leaves it (so a seeded run draws what it drew)."""

from __future__ import annotations

import pytest
import torch

from tunesmith.kernels.cpu.ops import Kernels


@pytest.mark.parametrize(("rows", "vocab", "k"), [(4, 2048, 250), (1, 16, 1), (3, 64, 64)])
def test_top_k_filter_is_torchs(kernel_build: Kernels, rows: int, vocab: int, k: int) -> None:
    logits = torch.randn(rows, 2, vocab)
    logits[0, 0, :5] = logits[0, 0, 5]  # ties at whatever rank they land
    kth = torch.topk(logits, k, dim=-1).values.amin(dim=-1, keepdim=True)
    want = logits.masked_fill(logits < kth, float("-inf"))
    assert torch.equal(kernel_build.top_k_filter(logits, k), want)
    with pytest.raises(RuntimeError, match="k must be in"):
        kernel_build.top_k_filter(logits, vocab + 1)


def probabilities(rows: int, vocab: int, keep: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(rows, vocab, generator=gen)
    if keep < vocab:
        kth = torch.topk(logits, keep, dim=-1).values.amin(dim=-1, keepdim=True)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return logits.softmax(dim=-1)


@pytest.mark.parametrize(("rows", "vocab", "keep"), [(8, 2048, 250), (2, 2048, 2048), (3, 7, 1)])
def test_multinomial_one_is_torchs(kernel_build: Kernels, rows: int, vocab: int, keep: int) -> None:
    for seed in range(50):
        probs = probabilities(rows, vocab, keep, seed)
        ours, theirs = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        got = kernel_build.multinomial_one(probs, ours)
        want = torch.multinomial(probs, 1, generator=theirs)
        assert torch.equal(got, want), seed
        assert torch.equal(ours.get_state(), theirs.get_state())  # the stream moved alike


def test_multinomial_one_draws_from_the_default_generator(kernel_build: Kernels) -> None:
    probs = probabilities(4, 512, 40, 0)
    torch.manual_seed(3)
    got = kernel_build.multinomial_one(probs, None)
    after = torch.rand(1)
    torch.manual_seed(3)
    assert torch.equal(got, torch.multinomial(probs, 1)) and torch.equal(after, torch.rand(1))


def test_a_skewed_row_draws_its_likely_token(kernel_build: Kernels) -> None:
    probs = torch.zeros(2, 100)
    probs[0, 7], probs[1, 99] = 1.0, 1.0
    assert kernel_build.multinomial_one(probs).flatten().tolist() == [7, 99]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(("temperature", "k"), [(1.0, 250), (1.3, 50), (0.7, 0), (2.0, 2048)])
def test_sample_rows_is_torchs_pipeline(
    kernel_build: Kernels, temperature: float, k: int, threads: int
) -> None:
    """temperature, top-k, softmax, draw in one call: torch's tokens and generator state,
    whatever the threads sharing the rows."""
    for seed in range(20):
        logits = 4 * torch.randn(5, 2048, generator=torch.Generator().manual_seed(seed))
        ours, theirs = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        scaled = logits / temperature
        if 0 < k < 2048:
            kth = torch.topk(scaled, k, dim=-1).values.amin(dim=-1, keepdim=True)
            scaled = scaled.masked_fill(scaled < kth, float("-inf"))
        want = torch.multinomial(scaled.softmax(dim=-1), 1, generator=theirs)
        got = kernel_build.sample_rows(logits, temperature, k, ours, threads)
        assert torch.equal(got, want), seed
        assert torch.equal(ours.get_state(), theirs.get_state())


def test_equal_probabilities_draw_torchs_index(kernel_build: Kernels) -> None:
    """Rows of equal probabilities (ratios that differ by their draws alone), a row with one
    certain token and rows of tiny ones: the draws that skip their logarithm (a bound shows
    they cannot win) pick torch's index every time."""
    flat = torch.zeros(3, 64)
    flat[0, :] = 1 / 64
    flat[1, :10] = 0.1
    flat[2, 5] = 1.0
    tiny = torch.full((2, 64), 1e-30)
    tiny[:, 0] = 1.0 - 63e-30
    for seed in range(300):
        for probs in (flat, tiny):
            ours, theirs = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
            got = kernel_build.multinomial_one(probs, ours)
            assert torch.equal(got, torch.multinomial(probs, 1, generator=theirs)), seed
            assert torch.equal(ours.get_state(), theirs.get_state())
