"""One query's attention over a float16 or an int8 KV cache (`attend_one`), and the int8
decoder's int8 cache: torch's attention on a float32 copy of the same keys and values is the
reference."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tunesmith import MusicGen
from tunesmith.kernels.cpu import build
from tunesmith.kernels.cpu.ops import Kernels
from tunesmith.models import kv_int8
from tunesmith.models.lm import CacheLayout

needs_kernel = pytest.mark.skipif(
    not build.available(), reason="no attention CPU kernel here (needs AVX2, a compiler)"
)


def padded_text(batch: int, seen: int) -> torch.Tensor:
    """An additive mask [batch, seen]: padded text, the last keys of row 0 not there."""
    mask = torch.zeros(batch, seen)
    mask[0, seen // 2 + 1 :] = float("-inf")
    return mask


def torch_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seen: int, mask: torch.Tensor | None
) -> torch.Tensor:
    """The reference: torch's attention over the first `seen` frames, in float32."""
    return F.scaled_dot_product_attention(
        q,
        k[:, :, :seen].float(),
        v[:, :, :seen].float(),
        attn_mask=None if mask is None else mask[:, None, None, :],
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
    mask = padded_text(batch, seen) if masked else None
    got = kernel_build.attend_one(q, k, v, seen, mask)
    want = torch_attention(q, k, v, seen, mask)
    assert (got - want).abs().max() < 1e-5


def int8_cache(
    batch: int, heads: int, frames: int, head_dim: int
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Keys and values rounded as the int8 decoder rounds them, (keys' and values' scales),
    and the float32 values they stand for (keys, values) stacked."""
    k, k_scale = kv_int8.quantize(torch.randn(batch, heads, frames, head_dim))
    v, v_scale = kv_int8.quantize(torch.randn(batch, heads, frames, head_dim))
    floats = torch.stack([kv_int8.dequantize(k, k_scale), kv_int8.dequantize(v, v_scale)])
    return k, v, (k_scale, v_scale), floats


# 64-wide heads (every MusicGen's) take the integer sums, with frame counts around the 512-bit
# build's 16 keys and 4 values a pass and past the AVX2 loop's int32 stretch (256 frames);
# 12-wide heads take the float path.
INT8_SHAPES = [(2, 16, 40, 64, 37), (2, 4, 40, 64, 1), (1, 4, 600, 64, 600), (1, 2, 2000, 64, 1999)]


@needs_kernel
@pytest.mark.parametrize(
    ("batch", "heads", "frames", "head_dim", "seen"), [*INT8_SHAPES, (3, 4, 20, 12, 19)]
)
@pytest.mark.parametrize("masked", [False, True])
def test_int8_cache_matches_torch_attention(
    kernel_build: Kernels,
    batch: int,
    heads: int,
    frames: int,
    head_dim: int,
    seen: int,
    masked: bool,
) -> None:
    """The query and the softmax weights are rounded to 15 bits (one scale a head) so that the
    sums are exact integers: a score moves by ~1e-4 (half a step of the largest query entry,
    over 64 keys), where the int8 keys themselves move it ~100x more."""
    q = 3 * torch.randn(batch, heads, 1, head_dim)
    k, v, scales, (kf, vf) = int8_cache(batch, heads, frames, head_dim)
    mask = padded_text(batch, seen) if masked else None
    got = kernel_build.attend_one(q, k, v, seen, mask, scales)
    want = torch_attention(q, kf, vf, seen, mask)
    assert (got - want).abs().max() < 1e-3 * want.abs().max()


@needs_kernel
@pytest.mark.parametrize(("batch", "heads", "frames", "head_dim", "seen"), INT8_SHAPES)
def test_every_build_attends_as_avx2(
    kernel_build: Kernels, batch: int, heads: int, frames: int, head_dim: int, seen: int
) -> None:
    """Each build adds the same integers in its own order: AVX2's floats, to the bit."""
    avx2 = build.kernels_for("avx2")
    assert avx2 is not None
    q = 3 * torch.randn(batch, heads, 1, head_dim)
    k, v, scales, _ = int8_cache(batch, heads, frames, head_dim)
    mask = torch.zeros(batch, seen)
    mask[-1, : seen // 3] = float("-inf")
    for m in (None, mask):
        assert torch.equal(
            kernel_build.attend_one(q, k, v, seen, m, scales),
            avx2.attend_one(q, k, v, seen, m, scales),
        )


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
