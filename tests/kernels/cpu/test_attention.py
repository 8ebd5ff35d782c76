"""One query's attention over a float16 KV cache (`attend_one`), and the int8 decoder's int8
cache: torch's attention on a float32 copy of the same keys and values is the reference."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tunesmith import MusicGen
from tunesmith.kernels.cpu import build
from tunesmith.kernels.cpu.ops import Kernels
from tunesmith.models.lm import CacheLayout

needs_kernel = pytest.mark.skipif(
    not build.available(), reason="no attention CPU kernel here (needs AVX2, a compiler)"
)


@needs_kernel
@pytest.mark.parametrize(
    ("batch", "heads", "frames", "head_dim", "seen"),
    [(2, 16, 40, 64, 37), (2, 16, 40, 64, 1), (3, 4, 20, 12, 20), (1, 2, 9, 8, 5)],
)
@pytest.mark.parametrize("masked", [False, True])
def test_kernel_matches_torch_attention(
    kernel_build: Kernels,
    batch: int,
    heads: int,
    frames: int,
    head_dim: int,
    seen: int,
    masked: bool,
) -> None:
    q = torch.randn(batch, heads, 1, head_dim)
    k = torch.randn(batch, heads, frames, head_dim).half()
    v = torch.randn(batch, heads, frames, head_dim).half()
    mask = None
    if masked:  # padded text: the last keys of row 0 are not there
        mask = torch.zeros(batch, seen)
        mask[0, seen // 2 + 1 :] = float("-inf")
    got = kernel_build.attend_one(q, k, v, seen, mask)
    want = F.scaled_dot_product_attention(
        q,
        k[:, :, :seen].float(),
        v[:, :, :seen].float(),
        attn_mask=None if mask is None else mask[:, None, None, :],
    )
    assert (got - want).abs().max() < 1e-5


@needs_kernel
@torch.inference_mode()
def test_int8_decoder_keeps_an_int8_cache(tiny_checkpoint: Path) -> None:
    """The int8 decoder stores keys and values as int8 with a scale per frame and head on a
    CPU (`models.kv_int8`); its logits, prefill then one frame at a time with padded text,
    stay within that rounding of a float32 cache."""
    step = MusicGen.from_pretrained(tiny_checkpoint, device="cpu", quantize="int8").step
    text, mask = torch.randn(2, 5, 48), torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    tokens = torch.randint(0, 2048, (4, 4, 12))
    logits = []
    for dtype in (torch.int8, None):
        if dtype is None:  # a float32 cache: the step hands it to the layers, one by one
            cache = step.lm.new_cache(4, 12, text, mask, CacheLayout())
        else:
            cache = step.new_cache(4, 12, text, mask)
        assert cache.layers[0].self_k.dtype == (dtype or torch.float32)
        steps = [step(tokens[:, :, :6], cache)] + [
            step(tokens[:, :, i : i + 1], cache) for i in range(6, 12)
        ]
        logits.append(torch.cat(steps, dim=2))
    small, full = logits
    # One int8 step is max|x| / 127: an error of ~0.6% of a Gaussian vector's spread (the
    # float16 cache's was ~0.03%). The full-size guard holds the whole int8 decoder to 3%.
    assert float((small - full).norm() / full.norm()) < 1e-2
