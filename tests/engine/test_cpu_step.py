"""A decoder's whole one-frame step in one C++ call (`CpuKernelStep`), int8 or float32: the
same decoder run module by module (its eager `forward`, the same product kernels, torch's
attention over the same cache) is the reference."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from tunesmith import MusicGen
from tunesmith.config import LMConfig
from tunesmith.engine.cpu_step import CpuKernelStep
from tunesmith.engine.int8 import quantize_linears
from tunesmith.engine.prepare import build_step
from tunesmith.engine.step import Draw, guide
from tunesmith.generation.sampling import sample
from tunesmith.kernels.cpu import build
from tunesmith.kernels.cpu.ops import Kernels
from tunesmith.models.lm import LMCache, MusicGenLM

needs_kernel = pytest.mark.skipif(
    not build.available(), reason="no CPU kernels here (needs x86-64 AVX2 and a compiler)"
)


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got - want).norm() / want.norm()).item()


def decoder(
    cfg: LMConfig, int8: bool = True, seed: int = 0, kernels: Kernels | None = None
) -> CpuKernelStep:
    """A random decoder (int8 or float32), fused as loading fuses it (for this CPU's kernel
    build, or `kernels`), and its step."""
    torch.manual_seed(seed)
    lm = MusicGenLM(cfg)
    for module in lm.modules():  # non-trivial norms, so that their parameters are tested
        if isinstance(module, torch.nn.LayerNorm):
            torch.nn.init.normal_(module.weight, 1.0, 0.2)
            torch.nn.init.normal_(module.bias, 0.0, 0.2)
    if int8:
        quantize_linears(lm, "int8")
    step = build_step(lm.eval(), kernels=kernels)
    assert isinstance(step, CpuKernelStep)
    return step


def caches(
    lm: CpuKernelStep, rows: int, text_rows: int, words: int, padded: bool, capacity: int = 24
) -> tuple[LMCache, LMCache]:
    """Two identical caches: guided batches have text in their first `text_rows` rows."""
    text = torch.randn(text_rows, words, lm.lm.cfg.hidden_size)
    mask = torch.ones(text_rows, words)
    if padded:
        mask[0, words // 2 :] = 0
    return lm.new_cache(rows, capacity, text, mask), lm.new_cache(rows, capacity, text, mask)


def compare_steps(step: CpuKernelStep, a: LMCache, b: LMCache, steps: int) -> float:
    """Worst relative error of the step's logits against the module path over `steps` steps
    (first a 3-frame prefill, as generation starts), and the caches written alike."""
    lm: MusicGenLM = step.lm
    rows, k = a.layers[0].self_k.shape[0], lm.cfg.num_codebooks
    worst = 0.0
    with torch.inference_mode():
        prefill = torch.randint(0, lm.cfg.vocab_size + 1, (rows, k, 3))
        step(prefill, a), step(prefill, b)
        for _ in range(steps):
            tokens = torch.randint(0, lm.cfg.vocab_size + 1, (rows, k, 1))
            want = lm(tokens, a)
            got = step(tokens, b)
            assert got.shape == want.shape == (rows, k, 1, lm.cfg.vocab_size)
            worst = max(worst, relative_error(got, want))
    assert a.length == b.length == 3 + steps
    for la, lb in zip(a.layers, b.layers, strict=True):
        written = slice(0, a.length)
        keys_a, keys_b = la.self_k[:, :, written].float(), lb.self_k[:, :, written].float()
        assert relative_error(keys_b, keys_a) < 1e-3
        assert (
            relative_error(lb.self_v[:, :, written].float(), la.self_v[:, :, written].float())
            < 1e-3
        )
    return worst


@needs_kernel
def test_loading_gives_the_step(tiny_checkpoint: Path) -> None:
    int8 = MusicGen.from_pretrained(tiny_checkpoint, device="cpu", quantize="int8").step
    fp32 = MusicGen.from_pretrained(tiny_checkpoint, device="cpu").step
    assert isinstance(int8, CpuKernelStep) and isinstance(fp32, CpuKernelStep)
    assert int8.kernel is not None and int8.kernel.kv_dtype == torch.int8
    assert fp32.kernel is not None and fp32.kernel.kv_dtype == torch.float32


@needs_kernel
@pytest.mark.parametrize("quantize", ["int8", None])
@pytest.mark.parametrize(
    ("rows", "text_rows", "padded"), [(4, 2, True), (2, 1, False), (3, 3, False)]
)
def test_step_matches_modules_tiny(
    tiny_checkpoint: Path, quantize: str | None, rows: int, text_rows: int, padded: bool
) -> None:
    """hd 12 (the general attention path), guided and unguided batches, padded text."""
    model = MusicGen.from_pretrained(tiny_checkpoint, device="cpu", quantize=quantize)
    lm = model.step
    assert isinstance(lm, CpuKernelStep)
    a, b = caches(lm, rows, text_rows, 7, padded)
    assert compare_steps(lm, a, b, 12) < 1e-3


@needs_kernel
@pytest.mark.parametrize("int8", [True, False])
def test_step_matches_modules_at_musicgen_head_size(int8: bool) -> None:
    """64-wide heads (musicgen's), an fc2 wider than one 1024-column chunk, an odd batch."""
    cfg = LMConfig(vocab_size=64, hidden_size=128, num_layers=2, num_heads=2, ffn_dim=2048)
    lm = decoder(cfg, int8)
    assert lm.kernel is not None
    a, b = caches(lm, 5, 3, 9, True)
    assert compare_steps(lm, a, b, 10) < 1e-3


@needs_kernel
@pytest.mark.parametrize("int8", [True, False])
def test_every_build_gives_the_avx2_logits(kernel_build: Kernels, int8: bool) -> None:
    """Each kernel build this CPU runs steps like the AVX2 one: bit for bit with int8 weights
    (every build rounds each chunk's exact integer sum once), and within float32 rounding
    with float32 weights (the same FMAs in another order). musicgen's 64-wide heads, 2 K-chunks in fc2,
    a guided batch with padded text."""
    cfg = LMConfig(vocab_size=128, hidden_size=256, num_layers=2, num_heads=4, ffn_dim=2048)
    avx2 = build.kernels_for("avx2")
    assert avx2 is not None
    steps = [decoder(cfg, int8, kernels=kernels) for kernels in (avx2, kernel_build)]
    assert [s.kernel.kernels.name for s in steps if s.kernel] == ["avx2", kernel_build.name]
    torch.manual_seed(1)
    a, b = caches(steps[0], 4, 2, 9, True)
    tokens = torch.randint(0, cfg.vocab_size, (4, cfg.num_codebooks, 6))
    with torch.inference_mode():
        steps[0](tokens[:, :, :3], a), steps[1](tokens[:, :, :3], b)
        for i in range(3, 6):
            want = steps[0](tokens[:, :, i : i + 1], a)
            got = steps[1](tokens[:, :, i : i + 1], b)
            if int8:  # each chunk's integer sum, rounded once, in every build
                assert torch.equal(got, want)
            else:
                assert relative_error(got, want) < 1e-5


@needs_kernel
@pytest.mark.parametrize("int8", [True, False])
def test_threads_split_the_same_sums(int8: bool) -> None:
    """Each output is one thread's sum whatever the split: 1 and 2 threads agree exactly."""
    lm = decoder(
        LMConfig(vocab_size=64, hidden_size=64, num_layers=2, num_heads=2, ffn_dim=128), int8
    )
    # The same cache twice (torch's own products in its set-up may split sums by threads).
    a, b = caches(lm, 2, 1, 5, False)
    with torch.inference_mode():
        lm(torch.zeros(2, 4, 2, dtype=torch.long), a)
        lm(torch.zeros(2, 4, 2, dtype=torch.long), b)
    threads = torch.get_num_threads()
    out = []
    for n, cache in ((1, a), (2, b)):
        torch.set_num_threads(n)
        try:
            with torch.inference_mode():
                out.append(lm(torch.ones(2, 4, 1, dtype=torch.long), cache))
        finally:
            torch.set_num_threads(threads)
    assert torch.equal(out[0], out[1])


@needs_kernel
def test_full_cache_is_an_error_not_a_write_past_it() -> None:
    lm = decoder(LMConfig(vocab_size=64, hidden_size=64, num_layers=1, num_heads=2, ffn_dim=128))
    cache = caches(lm, 2, 1, 5, False, capacity=2)[0]
    with torch.inference_mode():
        lm(torch.zeros(2, 4, 1, dtype=torch.long), cache)
        lm(torch.zeros(2, 4, 1, dtype=torch.long), cache)
        with pytest.raises(RuntimeError, match="holds 2 frames"):
            lm(torch.zeros(2, 4, 1, dtype=torch.long), cache)


@needs_kernel
def test_copied_decoder_steps_with_its_own_weights() -> None:
    lm = decoder(LMConfig(vocab_size=64, hidden_size=64, num_layers=1, num_heads=2, ffn_dim=128))
    twin = copy.deepcopy(lm)
    assert twin.kernel is not None and lm.kernel is not None
    qkv = twin.lm.layers[0].self_attn.qkv_proj
    assert twin.kernel.tensors[2] is qkv.weight and lm.kernel.tensors[2] is not qkv.weight
    with torch.no_grad():
        qkv.weight.zero_()  # the copy changes; the original must not
    cache_a, cache_b = caches(lm, 2, 1, 5, False)
    with torch.inference_mode():
        tokens = torch.ones(2, 4, 1, dtype=torch.long)
        assert not torch.equal(lm(tokens, cache_a), twin(tokens, cache_b))


@needs_kernel
@pytest.mark.parametrize("quantize", ["int8", None])
def test_compile_leaves_cpu_steps_to_the_step(tiny_checkpoint: Path, quantize: str | None) -> None:
    """compile=True has nothing to do for a decoder stepping in C++ (no ~50 s compile)."""
    model = MusicGen.from_pretrained(tiny_checkpoint, device="cpu", quantize=quantize, compile=True)
    assert isinstance(model.step, CpuKernelStep) and model.step.kernel is not None


@needs_kernel
@pytest.mark.parametrize("int8", [True, False])
@pytest.mark.parametrize("scale", [3.0, 0.5])
def test_guidance_in_the_step_is_torchs_formula(int8: bool, scale: float) -> None:
    """`guided` mixes the halves in C++ exactly as `guide` does in torch, on the same step."""
    cfg = LMConfig(vocab_size=128, hidden_size=64, num_layers=2, num_heads=2, ffn_dim=128)
    lm = decoder(cfg, int8)
    a, b = caches(lm, 4, 2, 5, True)
    tokens = torch.randint(0, cfg.vocab_size, (4, cfg.num_codebooks, 4))
    with torch.inference_mode():
        lm(tokens[:, :, :2], a), lm(tokens[:, :, :2], b)
        for i in (2, 3):
            want = guide(lm(tokens[:, :, i : i + 1], a)[:, :, -1], scale)
            got = lm.guided(tokens[:, :, i : i + 1], b, scale)
            assert got.shape == (2, cfg.num_codebooks, cfg.vocab_size)
            assert torch.equal(got, want)
    with pytest.raises(RuntimeError, match="even number of rows"):
        lm.guided(
            tokens[:3, :, 3:], lm.new_cache(3, 8, torch.randn(3, 5, 64), torch.ones(3, 5)), 3.0
        )


@needs_kernel
@pytest.mark.parametrize("guided", [True, False])
def test_drawn_in_the_step_is_the_loops_sample(guided: bool) -> None:
    """`drawn` (guidance and the draw in the C++ call) gives `sample`'s tokens from the same
    logits, and leaves the generator where sampling leaves it."""
    cfg = LMConfig(vocab_size=128, hidden_size=64, num_layers=2, num_heads=2, ffn_dim=128)
    lm = decoder(cfg, True)
    a, b = caches(lm, 4, 2, 5, True)
    tokens = torch.randint(0, cfg.vocab_size, (4, cfg.num_codebooks, 5))
    ours, theirs = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    scale = 3.0 if guided else None
    with torch.inference_mode():
        lm(tokens[:, :, :2], a), lm(tokens[:, :, :2], b)
        for i in (2, 3, 4):
            frame = tokens[:, :, i : i + 1]
            logits = lm.guided(frame, a, 3.0) if guided else lm(frame, a)[:, :, -1]
            want = sample(logits, top_k=20, top_p=0.0, temperature=1.2, generator=theirs)
            got = lm.drawn(frame, b, scale, Draw(1.2, 20, ours))
            assert got is not None and torch.equal(got, want)
            assert torch.equal(ours.get_state(), theirs.get_state())
    prefill = tokens[:, :, :2]
    assert lm.drawn(prefill, b, scale, Draw(1.2, 20, ours)) is None  # many frames: not drawn


@needs_kernel
def test_step_at_musicgen_medium_widths() -> None:
    """1536-wide layers (musicgen-medium) take the kernels in two 768-column chunks."""
    cfg = LMConfig(vocab_size=64, hidden_size=1536, num_layers=1, num_heads=24, ffn_dim=512)
    lm = decoder(cfg, True)
    assert lm.kernel is not None
    a, b = caches(lm, 2, 1, 4, False)
    assert compare_steps(lm, a, b, 3) < 1e-3
