"""int8 decoder weights: the eager fp32 twin is the reference."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from tunesmith import InvalidOptionError, MusicGen
from tunesmith.engine.int8 import Int8Linear, quantize_linears, quantize_rows
from tunesmith.kernels.cpu import build, layout
from tunesmith.kernels.cpu.ops import Kernels


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).detach().norm() / want.detach().norm())


def test_quantize_rows_round_trip() -> None:
    w = torch.randn(64, 32)
    q, scales = quantize_rows(w)
    assert q.dtype == torch.int8 and scales.shape == (64,)
    assert (q.float() * scales[:, None] - w).abs().max() <= scales.max() / 2 + 1e-6


def test_int8_linear_close_to_linear() -> None:
    linear = nn.Linear(256, 128, bias=False)
    x = torch.randn(3, 5, 256)
    assert relative_error(Int8Linear.from_linear(linear)(x), linear(x)) < 0.01


def test_quantize_linears_swaps_only_bias_free_layers() -> None:
    model = nn.Sequential(nn.Linear(8, 8, bias=False), nn.Linear(8, 8))
    quantize_linears(model, "int8")
    assert isinstance(model[0], Int8Linear) and isinstance(model[1], nn.Linear)
    with pytest.raises(ValueError, match="unknown quantization"):
        quantize_linears(model, "int3")


def test_int8_model_matches_fp32_teacher_forced(
    tiny_model: MusicGen, tiny_checkpoint: Path
) -> None:
    q = MusicGen.from_pretrained(tiny_checkpoint, device="cpu", quantize="int8")
    assert any(isinstance(m, Int8Linear) for m in q.model.decoder.modules())
    text = tiny_model.condition(["lofi beat", "jazz"])
    tokens = torch.randint(0, 2048, (2, 4, 30))
    with torch.inference_mode():
        want = tiny_model.model.decoder(
            tokens, tiny_model.model.decoder.new_cache(2, 30, text.states, text.mask)
        )
        got = q.model.decoder(tokens, q.model.decoder.new_cache(2, 30, text.states, text.mask))
    assert relative_error(got, want) < 0.03
    wav = q.generate("lofi beat", duration=0.3, seed=1)
    assert wav.shape == (1, 1, 9600) and torch.isfinite(wav).all()


def test_unknown_quantize_is_refused(tiny_checkpoint: Path) -> None:
    with pytest.raises(InvalidOptionError, match="int8"):
        MusicGen.from_pretrained(tiny_checkpoint, device="cpu", quantize="int3")


def test_int4_is_refused_with_the_reason(tiny_checkpoint: Path) -> None:
    # Measured and withheld (issue 16's guard): the error says so rather than "unknown".
    with pytest.raises(InvalidOptionError, match=r"not offered.*6%.*int8 is the smallest"):
        MusicGen.from_pretrained(tiny_checkpoint, device="cpu", quantize="int4")


@pytest.mark.parametrize(
    ("rows", "n", "k"),
    [
        (1, 16, 48),
        (2, 96, 1024),
        (3, 48, 2048),
        (5, 16, 16),
        (7, 32, 64),
        (9, 32, 1024),  # the 512-bit build's strips: 8 rows, then 1
        (16, 80, 1024),
    ],
)
def test_cpu_kernel_matches_float64_product(
    kernel_build: Kernels, rows: int, n: int, k: int
) -> None:
    """Every build this CPU runs (AVX2's vpmaddwd, the VNNI builds' vpdpbusd)."""
    layer = Int8Linear.from_linear(nn.Linear(k, n, bias=False))
    x = torch.randn(rows, k)
    want = x.double() @ layer.weight.double().T * layer.scales.double()
    assert layer.pack_for_cpu(kernel_build) and layer.chunk == min(k, layout.CHUNK)
    assert layer.block == kernel_build.int8_block
    assert torch.equal(
        layer.unpacked_weight(), layout.unpack(layer.weight, n, k, layer.chunk, layer.block)
    )
    got = layer(x)
    assert got.dtype == torch.float32
    assert relative_error(got.double(), want) < 1e-4  # int16 activations: 15 bits per row


def test_every_build_gives_the_avx2_floats(kernel_build: Kernels) -> None:
    """Whatever its blocks, a build rounds each chunk's exact integer sum once: AVX2's floats."""
    avx2 = build.kernels_for("avx2")
    assert avx2 is not None
    for rows, n, k in [(2, 3072, 1024), (9, 64, 4096), (16, 2048, 1024)]:
        plain = Int8Linear.from_linear(nn.Linear(k, n, bias=False))
        other = copy.deepcopy(plain)
        assert plain.pack_for_cpu(avx2) and other.pack_for_cpu(kernel_build)
        x = 4 * torch.randn(rows, k)
        assert torch.equal(other(x), plain(x))


def test_outputs_that_do_not_fill_a_block_stay_on_torchs_kernel(kernel_build: Kernels) -> None:
    n = kernel_build.int8_block.rows // 2
    layer = Int8Linear.from_linear(nn.Linear(64, n, bias=False))
    x = torch.randn(2, 64)
    want = layer(x)
    assert not layer.pack_for_cpu(kernel_build) and layer.chunk is None
    assert torch.equal(layer(x), want)


def test_packing_round_trips_and_skips_shapes_it_cannot_take() -> None:
    w = torch.randint(-127, 128, (16, 2048), dtype=torch.int8)
    assert torch.equal(layout.unpack(layout.pack(w, 1024), 16, 2048, 1024), w)
    wide = layout.Block(16, 4)  # the 512-bit VNNI build's int8 blocks
    packed = layout.pack(w, 1024, wide)
    assert torch.equal(packed[:8], w[:2, :4].flatten())  # outputs 0-1's first 4 inputs first
    assert torch.equal(layout.unpack(packed, 16, 2048, 1024, wide), w)
    assert layout.chunk_for(40) is None and layout.chunk_for(1040) is None  # 208: too narrow
    assert layout.chunk_for(1536) == 768 and layout.chunk_for(6144) == 1024  # musicgen-medium
    assert not Int8Linear.from_linear(nn.Linear(40, 8, bias=False)).pack_for_cpu()


def test_packed_layers_fuse_and_match(tiny_checkpoint: Path) -> None:
    """Loading packs the decoder's int8 layers where the kernel exists; logits then match
    torch's kernel to its bfloat16 rounding."""
    q = MusicGen.from_pretrained(tiny_checkpoint, device="cpu", quantize="int8")
    layers = [m for m in q.model.decoder.modules() if isinstance(m, Int8Linear)]
    if not build.available():
        assert all(m.chunk is None for m in layers)
        return
    assert all(m.chunk is not None for m in layers)
    ref = copy.deepcopy(q.model.decoder)
    for m in ref.modules():
        if isinstance(m, Int8Linear) and m.chunk is not None:
            m.weight, m.chunk, m.scales_f32 = m.unpacked_weight(), None, None
    text = q.condition(["lofi beat"])
    tokens = torch.randint(0, 2048, (2, 4, 10))
    with torch.inference_mode():
        want = ref(tokens, ref.new_cache(2, 10, text.states, text.mask))
        got = q.model.decoder(tokens, q.model.decoder.new_cache(2, 10, text.states, text.mask))
    assert relative_error(got, want) < 0.01


def test_cpu_kernel_applies_gelu(kernel_build: Kernels) -> None:
    """fc1's GELU runs in the kernel (gelu=True): torch's exact GELU of the kernel's output."""
    plain = Int8Linear.from_linear(nn.Linear(1024, 256, bias=False))
    fused = copy.deepcopy(plain)
    assert plain.pack_for_cpu(kernel_build) and fused.pack_for_cpu(kernel_build)
    fused.gelu = True
    x = 3 * torch.randn(2, 1024)
    want = torch.nn.functional.gelu(plain(x))
    assert (fused(x) - want).abs().max() < 1e-5 * want.abs().max()


def test_int8_text_encoder_keeps_its_token_table_as_int8(tiny_checkpoint: Path) -> None:
    """quantize="int8" stores T5's token table as int8 rows; the text states stay close."""
    from tunesmith.engine.int8 import Int8Embedding

    fp32 = MusicGen.from_pretrained(tiny_checkpoint, device="cpu")
    q = MusicGen.from_pretrained(tiny_checkpoint, device="cpu", quantize="int8")
    table = q.model.text_encoder.embed_tokens
    assert isinstance(table, Int8Embedding) and table.weight.dtype == torch.int8
    prompts = ["lofi beat with soft piano", "drums"]
    want, got = fp32.condition(prompts).states, q.condition(prompts).states
    assert relative_error(got, want) < 0.02
