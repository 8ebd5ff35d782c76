"""int8 decoder weights: the eager fp32 twin is the reference."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from tunesmith import InvalidOptionError, MusicGen
from tunesmith.quantize import Int8Linear, quantize_linears, quantize_rows


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
