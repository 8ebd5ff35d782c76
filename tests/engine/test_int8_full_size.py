"""The int8 decoder as loaded (int8 kernels, steps in C++) at musicgen-small sizes.

test_full_size.py guards torch's int8 kernel; this guards what `from_pretrained(...,
quantize="int8")` runs on a CPU with the packed kernel: `pytest -m slow`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tunesmith import MusicGen
from tunesmith.engine.cpu_step import CpuKernelStep
from tunesmith.kernels.cpu import build
from tunesmith.testing.checkpoints import build_checkpoint

pytestmark = pytest.mark.slow

PROMPTS = ["dreamy synth pads over a slow beat", "fast jazz drums"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_checkpoint(tmp_path_factory.mktemp("small"), "small")


@torch.inference_mode()
def test_packed_int8_quality_guard(folder: Path) -> None:
    """Teacher-forced logits of the loaded int8 decoder within 3% relative error of fp32:
    30 frames at once, then 10 one at a time (the step path, `CpuKernelStep`: int8 KV cache,
    our attention kernel, GELU in the int8 kernel), in all and those 10 steps alone."""
    if not build.available():
        pytest.skip("no int8 CPU kernel here")
    fp32 = MusicGen.from_pretrained(folder, device="cpu")
    text = fp32.condition(PROMPTS)
    tokens = torch.randint(0, 2048, (2, 4, 40))
    lm = fp32.model.decoder
    want = lm(tokens, lm.new_cache(2, 40, text.states, text.mask))
    del fp32, lm
    q = MusicGen.from_pretrained(folder, device="cpu", quantize="int8").step
    assert isinstance(q, CpuKernelStep) and q.kernel is not None
    cache = q.new_cache(2, 40, text.states, text.mask)
    assert cache.layers[0].self_k.dtype == torch.int8
    steps = [q(tokens[:, :, :30], cache)] + [
        q(tokens[:, :, i : i + 1], cache) for i in range(30, 40)
    ]
    got = torch.cat(steps, dim=2)
    rel = float((got - want).norm() / want.norm())
    tail = got[:, :, 30:] - want[:, :, 30:]
    rel_steps = float(tail.norm() / want[:, :, 30:].norm())
    print(f"int8 logits: {rel:.4f} relative error ({rel_steps:.4f} over the single steps)")
    assert rel < 0.03, rel
    assert rel_steps < 0.03, rel_steps
