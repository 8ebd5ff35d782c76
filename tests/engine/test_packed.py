"""Float32 weights packed for the CPU kernel (`PackedLinear`): torch's F.linear is the
reference (only summation order differs)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tunesmith import MusicGen
from tunesmith.engine.packed import PackedLinear
from tunesmith.kernels.cpu import build, layout

needs_kernel = pytest.mark.skipif(
    not build.available(), reason="no float32 CPU kernel here (needs AVX2 and a compiler)"
)


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).norm() / want.norm())


@needs_kernel
@pytest.mark.parametrize(
    ("rows", "n", "k"),
    [(1, 8, 48), (2, 96, 1024), (3, 12, 2048), (5, 4, 16), (16, 64, 4096), (129, 8, 32)],
)
def test_kernel_matches_linear(rows: int, n: int, k: int) -> None:
    linear = nn.Linear(k, n, bias=False)
    packed = PackedLinear.from_linear(linear)
    assert packed is not None and packed.chunk == min(k, layout.CHUNK)
    assert packed.weight.shape == (n * k,)  # one packed copy, no [out, in] twin
    x = torch.randn(2, rows, k)  # leading dims flatten: 2 * rows kernel rows (or fallback)
    with torch.no_grad():
        want, got = linear(x), packed(x)
    assert got.shape == want.shape and got.dtype == torch.float32
    assert relative_error(got, want) < 1e-5


def test_pack_round_trip_and_shapes_it_skips() -> None:
    w = torch.randn(8, 2048)
    assert torch.equal(layout.unpack(layout.pack(w, 1024), 8, 2048, 1024), w)
    assert PackedLinear.from_linear(nn.Linear(40, 8, bias=False)) is None  # K % 16
    assert PackedLinear.from_linear(nn.Linear(64, 6, bias=False)) is None  # N % 4
    assert PackedLinear.from_linear(nn.Linear(64, 8)) is None  # a bias
    assert PackedLinear.from_linear(nn.Linear(64, 8, bias=False).double()) is None


@needs_kernel
def test_unpacked_weight_is_the_original() -> None:
    linear = nn.Linear(2048, 12, bias=False)
    packed = PackedLinear.from_linear(linear)
    assert packed is not None and torch.equal(packed.unpacked_weight(), linear.weight)
    x = torch.randn(3, 2048, dtype=torch.float64)  # not float32: torch's product
    with torch.no_grad():
        assert torch.allclose(packed(x), x @ linear.weight.double().T)


def test_loading_packs_the_decoder_and_logits_match(tiny_checkpoint: Path) -> None:
    model = MusicGen.from_pretrained(tiny_checkpoint, device="cpu")
    lm = model.model.decoder
    packed = {n for n, m in lm.named_modules() if isinstance(m, PackedLinear)}
    if not build.available():
        assert not packed
        return
    assert "layers.0.fc1" in packed and "lm_heads.0" in packed
    assert "layers.0.encoder_attn.k_proj" not in packed  # run once per call, on many rows
    ref = copy.deepcopy(lm)
    for name, module in list(ref.named_modules()):
        if isinstance(module, PackedLinear):
            linear = nn.Linear(module.in_features, module.out_features, bias=False)
            linear.weight = nn.Parameter(module.unpacked_weight())
            parent, _, attr = name.rpartition(".")
            setattr(ref.get_submodule(parent), attr, linear)
    text = model.condition(["lofi beat"])
    tokens = torch.randint(0, 2048, (2, 4, 10))
    with torch.inference_mode():
        want = ref(tokens, ref.new_cache(2, 10, text.states, text.mask))
        got = lm(tokens, lm.new_cache(2, 10, text.states, text.mask))
    assert relative_error(got, want) < 1e-5


@needs_kernel
def test_kernel_traces_under_compile() -> None:
    packed = PackedLinear.from_linear(nn.Linear(64, 32, bias=False))
    assert packed is not None
    x = torch.randn(2, 64)
    with torch.no_grad():
        want = F.linear(x, packed.unpacked_weight())
        got = torch.compile(packed, fullgraph=True)(x)
    assert relative_error(got, want) < 1e-5
