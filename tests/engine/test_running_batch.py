"""A running batch's steps (`Step.rows`): rows at positions of their own, in places of a KV pool,
each giving exactly the logits and cache bytes of a step of its own, whatever rows run beside
it; the pool's places are taken, given back and written over."""

from __future__ import annotations

import pytest
import torch

from tunesmith.config import LMConfig
from tunesmith.engine.int8 import quantize_linears
from tunesmith.engine.prepare import build_step
from tunesmith.engine.running_batch import KVPool, LayeredPrefill, RowBatch, RowGroup
from tunesmith.engine.step import PREFILL_CHUNK, EagerStep, Step
from tunesmith.kernels.cpu import build
from tunesmith.kernels.cpu.ops import Kernels
from tunesmith.models.lm import MusicGenLM, sinusoidal_positions

needs_kernel = pytest.mark.skipif(
    not build.available(), reason="no CPU kernels here (needs x86-64 AVX2 and a compiler)"
)
# musicgen's 64-wide heads (the integer attention of an int8 cache, four keys at a time in
# float32), fc2 over two 1024-column chunks.
WIDE = LMConfig(vocab_size=64, hidden_size=128, num_layers=2, num_heads=2, ffn_dim=2048)
# (rows, frames already written, text words) of each job: guided and not, a first step, more
# frames than one prefill chunk and than a 16-frame attention block, a text longer than the
# pool holds at first (it grows with jobs already placed).
JOBS = [(2, 0, 5), (1, 19, 9), (2, 70, 1), (2, 3, 45), (1, 33, 7)]


def decoder(
    cfg: LMConfig, int8: bool, kernels: Kernels | None = None, fused: bool = True
) -> tuple[Step, MusicGenLM]:
    torch.manual_seed(0)
    lm = MusicGenLM(cfg)
    for module in lm.modules():
        if isinstance(module, torch.nn.LayerNorm):
            torch.nn.init.normal_(module.weight, 1.0, 0.2)
            torch.nn.init.normal_(module.bias, 0.0, 0.2)
    if int8:
        quantize_linears(lm, "int8")
    lm = lm.eval()
    return (build_step(lm, kernels=kernels) if fused else EagerStep(lm)), lm


def text_of(cfg: LMConfig, words: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, words, cfg.hidden_size, generator=g), torch.ones(1, words)


def alone(step: Step, job: int, history: torch.Tensor, frame: torch.Tensor) -> tuple:
    """The job's rows alone: its history prefilled, then one step -> (logits, its cache)."""
    rows, frames, words = JOBS[job]
    text, mask = text_of(step.lm.cfg, words, job)
    cache = step.new_cache(rows, frames + 5, text, mask)  # a capacity of its own
    if frames:
        step(history, cache)
    logits = step(frame, cache)[:, :, -1]
    return logits, cache


def placed(step: Step, pool: KVPool, place: int, job: int, history: torch.Tensor) -> RowGroup:
    """The job in its place of the pool, its history fed a chunk at a time."""
    rows, frames, words = JOBS[job]
    lm = step.lm
    text, mask = text_of(lm.cfg, words, job)
    dtype = pool.layout.text_dtype(next(lm.parameters()).dtype)
    pool.set_text(place, lm.text_keys(text, mask, dtype)[0])
    for start in range(0, frames, PREFILL_CHUNK):
        chunk = history[:, :, start : start + PREFILL_CHUNK]
        LayeredPrefill(lm, pool, RowGroup(place, rows, start), chunk).run()
    return RowGroup(place, rows, frames)


def check_rows_equal_alone(step: Step) -> None:
    cfg = step.lm.cfg
    torch.manual_seed(1)
    k, v = cfg.num_codebooks, cfg.vocab_size
    histories = [torch.randint(0, v + 1, (r, k, f)) for r, f, _ in JOBS]
    frames = [torch.randint(0, v + 1, (r, k, 1)) for r, _, _ in JOBS]
    pool = step.new_pool(len(JOBS) + 1, 80)
    places = [4, 0, 5, 2, 1]  # any place, not in order
    with torch.inference_mode():
        groups = [placed(step, pool, p, j, histories[j]) for j, p in enumerate(places)]
        batch = RowBatch(tuple(groups))
        firsts = [f[:1] for f in frames]
        seconds = [f[1:] for f in frames if f.shape[0] == 2]
        logits = step.rows(torch.cat(firsts + seconds), pool, batch)
        assert logits.shape == (batch.size, k, v)
        for job, rows in enumerate(batch.rows_of):
            want, cache = alone(step, job, histories[job], frames[job])
            assert torch.equal(logits[rows], want), f"job {job}"
            written = JOBS[job][1] + 1
            for mine, theirs in zip(pool.view(groups[job]).layers, cache.layers, strict=True):
                assert torch.equal(mine.self_k[:, :, :written], theirs.self_k[:, :, :written])
                assert torch.equal(mine.self_v[:, :, :written], theirs.self_v[:, :, :written])
                if theirs.self_k_scale is not None:
                    assert mine.self_k_scale is not None
                    assert torch.equal(
                        mine.self_k_scale[:, :, :written], theirs.self_k_scale[:, :, :written]
                    )


@needs_kernel
def test_cpp_rows_equal_each_job_alone(kernel_build: Kernels) -> None:
    """The C++ step of rows at five positions (guided and not, texts of other lengths, places
    out of order): each job's logits and cache bytes are those of its own step, bit for bit,
    on every kernel build (int8 weights and cache: each build's own integer attention)."""
    step, _ = decoder(WIDE, True, kernels=kernel_build)
    check_rows_equal_alone(step)


@needs_kernel
def test_cpp_float32_rows_equal_each_job_alone() -> None:
    step, _ = decoder(WIDE, False)
    check_rows_equal_alone(step)


@pytest.mark.parametrize("int8", [True, False])
def test_eager_rows_equal_each_job_alone(int8: bool, one_thread: None) -> None:
    """Module by module (torch's products and attention, unfused weights), likewise (on one
    thread: many small torch ops; alone and in the batch alike)."""
    step, _ = decoder(WIDE, int8, fused=False)
    check_rows_equal_alone(step)


def test_a_prefill_a_layer_at_a_time_is_the_prefill_in_one_call() -> None:
    """`LayeredPrefill.run(0)` runs one layer a call; the chunk's logits and cache bytes are
    those of `Step.__call__` on the chunk (the first call embeds, the last one gives logits)."""
    step, lm = decoder(WIDE, True)
    text, mask = text_of(WIDE, 6, 0)
    tokens = torch.randint(0, WIDE.vocab_size + 1, (2, WIDE.num_codebooks, PREFILL_CHUNK))
    with torch.inference_mode():
        alone = step.new_cache(2, PREFILL_CHUNK + 30, text, mask)
        step(tokens[:, :, :5], alone)
        want = step(tokens[:, :, 5:], alone)[:, :, -1]
        pool = step.new_pool(2, 80)
        dtype = pool.layout.text_dtype(torch.float32)
        pool.set_text(1, lm.text_keys(text, mask, dtype)[0])
        LayeredPrefill(lm, pool, RowGroup(1, 2, 0), tokens[:, :, :5]).run()
        prefill = LayeredPrefill(lm, pool, RowGroup(1, 2, 5), tokens[:, :, 5:])
        assert prefill.frames == PREFILL_CHUNK - 5
        assert [prefill.run(0.0) for _ in range(WIDE.num_layers - 1)] == [None]
        got = prefill.run(0.0)
    assert got is not None and torch.equal(got, want)
    for mine, theirs in zip(pool.view(RowGroup(1, 2, 0)).layers, alone.layers, strict=True):
        end = PREFILL_CHUNK
        assert torch.equal(mine.self_k[:, :, :end], theirs.self_k[:, :, :end])
        assert torch.equal(mine.self_v_scale[:, :, :end], theirs.self_v_scale[:, :, :end])


def test_rows_are_cond_rows_first() -> None:
    batch = RowBatch((RowGroup(3, 2, 7), RowGroup(0, 1, 2), RowGroup(1, 2, 0)))
    assert batch.size == 5
    assert batch.rows_of == [[0, 3], [1], [2, 4]]
    assert batch.slots(4).tolist() == [3, 0, 1, 7, 5]  # place j: rows j and 4 + j
    assert batch.positions().tolist() == [7, 2, 0, 7, 0]


def test_places_are_reused_and_texts_kept() -> None:
    step, lm = decoder(WIDE, False, fused=False)
    pool = step.new_pool(3, 20)
    assert [pool.take(), pool.take(), pool.take(), pool.take()] == [0, 1, 2, None]
    pool.give(1)
    with pytest.raises(ValueError, match="not taken"):
        pool.give(1)
    assert pool.take() == 1
    short, long = (
        lm.text_keys(*text_of(lm.cfg, words, words), torch.float32)[0] for words in (4, 40)
    )
    pool.set_text(0, short)
    pool.set_text(2, long)  # grows the store past 32 words
    assert pool.text_capacity == 48 and pool.words == [4, 0, 40]
    for layer, (keys, _) in zip(pool.cache.layers, short, strict=True):
        assert torch.equal(layer.cross_k[0, :, :4], keys[0])
    view = pool.view(RowGroup(2, 2, 9))
    assert view.length == 9 and view.layers[0].self_k.shape[0] == 2
    assert view.layers[0].cross_k.shape[2] == 40
    keys = pool.cache.layers[0].self_k
    assert view.layers[0].self_k.data_ptr() == keys[2].data_ptr()
    assert view.layers[0].self_k[1].data_ptr() == keys[5].data_ptr()


def test_positional_rows_do_not_depend_on_the_table() -> None:
    """The C++ step reads a row of one table for the whole pool where a job alone reads its
    own cache's: the rows must be the same floats (elementwise ops, whole vectors)."""
    for dim in (48, 128, 1024, 1536):
        big = sinusoidal_positions(torch.arange(1600), dim)
        for n in (1, 7, 37, 1505):
            assert torch.equal(sinusoidal_positions(torch.arange(n), dim), big[:n])
        assert torch.equal(sinusoidal_positions(torch.arange(100, 140), dim), big[100:140])
