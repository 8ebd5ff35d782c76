"""The int8 self-attention cache's rounding, and a layer cache that holds it."""

from __future__ import annotations

import torch

from tunesmith.models import kv_int8
from tunesmith.models.lm import LayerCache


def test_each_vector_rounds_to_127_steps_of_its_own_scale() -> None:
    x = torch.randn(2, 3, 5, 64) * torch.logspace(-3, 2, 5)[:, None]
    q, scales = kv_int8.quantize(x)
    assert q.dtype == torch.int8 and scales.dtype == torch.float32 and scales.shape == (2, 3, 5)
    assert int(q.abs().amax(dim=-1).min()) == 127  # each vector's largest value is +-127
    error = (kv_int8.dequantize(q, scales) - x).abs()
    assert bool((error <= scales[..., None] * (0.5 + 1e-5)).all())


def test_a_zero_vector_is_zeros_with_scale_zero() -> None:
    q, scales = kv_int8.quantize(torch.zeros(1, 64))
    assert not q.any() and float(scales[0]) == 0.0
    assert torch.equal(kv_int8.dequantize(q, scales), torch.zeros(1, 64))


def test_a_layer_cache_writes_and_reads_int8_frames() -> None:
    keys = torch.zeros(2, 4, 10, 64, dtype=torch.int8)
    values = torch.zeros_like(keys)
    none = torch.zeros(2, 4, 0, 64, dtype=torch.float16)
    layer = LayerCache.of(keys, values, none, none)
    assert layer.self_k_scale is not None and layer.self_k_scale.shape == (2, 4, 10)
    k, v = torch.randn(2, 4, 3, 64), torch.randn(2, 4, 3, 64)
    layer.write(2, k, v)
    got_k, got_v = layer.frames(5)
    assert got_k.shape == (2, 4, 5, 64) and got_k.dtype == torch.float32
    assert not got_k[:, :, :2].any()  # not written yet
    want_k = kv_int8.dequantize(*kv_int8.quantize(k))
    assert torch.equal(got_k[:, :, 2:], want_k)
    assert float((got_v[:, :, 2:] - v).abs().max()) < float(v.abs().max()) / 127


def test_a_float_cache_has_no_scales() -> None:
    keys = torch.zeros(1, 2, 4, 8)
    layer = LayerCache.of(keys, keys.clone(), keys[:, :, :0], keys[:, :, :0])
    assert layer.self_k_scale is None and layer.self_v_scale is None
    k = torch.randn(1, 2, 1, 8)
    layer.write(0, k, k)
    assert torch.equal(layer.frames(1)[0], k)
