"""The engine's CUDA-graph step (`CudaGraphStep`) and the fixed-shape step it captures:
inductor's compile of it checked on the CPU, the graphs themselves on a GPU (`cuda` marker)."""

from __future__ import annotations

import copy

import pytest
import torch

from tunesmith.engine.cuda_graphs import CudaGraphStep, compile_static


@torch.no_grad()
def test_compiled_static_step_equals_the_static_step(decoder_pair) -> None:
    """What compile=True captures on CUDA, compiled here for the CPU: inductor's static_step
    gives the step's logits, for two batch sizes and window lengths (dynamic shapes)."""

    _, ours = decoder_pair
    lm = copy.deepcopy(ours)
    compiled = compile_static(lm)
    torch.manual_seed(3)
    for rows, frames in [(2, 9), (4, 14)]:
        text, mask = torch.randn(rows // 2, 5, 48), torch.ones(rows // 2, 5, dtype=torch.long)
        mask[-1, 3:] = 0
        tokens = torch.randint(0, 2049, (rows, 4, 4))
        want, got = lm.new_cache(rows, frames, text, mask), lm.new_cache(rows, frames, text, mask)
        for cache in (want, got):
            lm.prepare_static(cache)
        for i in range(4):
            position = torch.tensor([i])
            a = lm.static_step(tokens[:, :, i : i + 1], position, want)
            b = compiled(tokens[:, :, i : i + 1], position, got)
            assert (a - b).abs().max() < 1e-4


@pytest.mark.cuda
def test_cuda_graph_generation_gives_the_eager_tokens(tiny_checkpoint) -> None:
    """On a GPU: greedy tokens with the decoder step as written replayed as CUDA graphs equal
    eager ones, over two windows (a graph per KV cache)."""
    from tunesmith import MusicGen

    eager = MusicGen.from_pretrained(tiny_checkpoint, device="cuda", dtype=torch.float32)
    graphed = MusicGen.from_pretrained(tiny_checkpoint, device="cuda", dtype=torch.float32)
    graphed.step = CudaGraphStep(graphed.model.decoder)  # the step as written, captured
    kwargs = dict(duration=40.0, stride=20.0, top_k=1)
    prompts = ["lofi beat", "an epic orchestral piece with brass"]
    want = eager.generate_tokens(prompts, **kwargs)
    got = graphed.generate_tokens(prompts, **kwargs)
    assert torch.equal(got, want)


@pytest.mark.cuda
@torch.inference_mode()
def test_compiled_cuda_graph_steps_give_the_eager_logits(tiny_checkpoint) -> None:
    """On a GPU, compile=True: inductor's step replayed as CUDA graphs gives the eager
    decoder's logits, teacher-forced over a window with padded text; and it generates."""
    from tunesmith import MusicGen

    eager = MusicGen.from_pretrained(tiny_checkpoint, device="cuda", dtype=torch.float32)
    compiled = MusicGen.from_pretrained(
        tiny_checkpoint, device="cuda", dtype=torch.float32, compile=True
    )
    lm = compiled.model.decoder
    assert isinstance(compiled.step, CudaGraphStep) and compiled.step.static is not None
    text = eager.condition(["lofi beat", "an epic orchestral piece with brass"])
    torch.manual_seed(0)
    tokens = torch.randint(0, 2048, (4, lm.cfg.num_codebooks, 12), device="cuda")
    logits = []
    for model in (eager, compiled):
        step = model.step
        cache = step.new_cache(4, 12, text.states, text.mask)
        steps = [step(tokens[:, :, i : i + 1], cache).clone() for i in range(12)]
        logits.append(torch.cat(steps, dim=2))
    assert (logits[0] - logits[1]).abs().max() < 1e-3
    codes = compiled.generate_tokens(["lofi beat"], duration=1.0, seed=0)
    assert codes.shape == (1, lm.cfg.num_codebooks, 50)


@torch.no_grad()
def test_cpu_tokens_and_prefills_run_eagerly(decoder_pair) -> None:
    """Off a GPU (and for prefills) the graph step is its eager twin."""
    _, ours = decoder_pair
    step = CudaGraphStep(ours)
    tokens = torch.randint(0, 2049, (2, 4, 5))
    text, mask = torch.randn(2, 3, 48), torch.ones(2, 3, dtype=torch.long)
    want = ours(tokens, ours.new_cache(2, 5, text, mask))
    cache = step.new_cache(2, 5, text, mask)
    assert cache.layers[0].self_k.shape[2] == 64  # a multiple of 64 frames: the graph's mask
    got = torch.cat(
        [step(tokens[:, :, :2], cache)] + [step(tokens[:, :, i : i + 1], cache) for i in (2, 3, 4)],
        dim=2,
    )
    assert (got - want).abs().max() < 1e-4
