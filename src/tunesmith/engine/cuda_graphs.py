"""CUDA graphs for the one-frame decoder step: one launch per step instead of ~300 kernels.

On a GPU a musicgen-small step is a few hundred tiny kernels, and launching them costs more
than running them. `MusicGenLM.static_step` computes the step with shapes that never change
(the position is a tensor, attention runs over the whole KV buffer with later frames
masked), so it can be captured once per KV cache and replayed for every later step.

The graph lives on the cache it was captured with (`LMCache.graph`): its inputs, outputs and
the cache's buffers stay at fixed addresses, and it goes when the cache goes (each window of a
long piece has its own cache and graph). The first step on a cache runs the function twice
on a side stream (warm-up, as capture requires), then captures it; every run writes the same
keys and values at the same position, so the warm-up runs leave nothing behind.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models.lm import LMCache, MusicGenLM


@dataclass
class StepGraph:
    """A captured step and the static tensors it reads and writes."""

    graph: torch.cuda.CUDAGraph
    tokens: torch.Tensor  # [B, K, 1] long, copied in before each replay
    position: torch.Tensor  # [1] long
    logits: torch.Tensor  # [B, K, 1, V] float32, overwritten by each replay


def capture(lm: MusicGenLM, tokens: torch.Tensor, cache: LMCache) -> StepGraph:
    """Capture `lm.static_step` for this cache, with `tokens` at `cache.length` as inputs."""
    static_tokens = tokens.clone()
    position = torch.tensor([cache.length], device=tokens.device)
    lm.prepare_static(cache)
    # The compiled step (compile_static_step) compiles on the first warm-up run, if not yet.
    step = lm.compiled_static_step or lm.static_step
    side = torch.cuda.Stream(device=tokens.device)
    side.wait_stream(torch.cuda.current_stream(tokens.device))
    with torch.cuda.stream(side):
        for _ in range(2):
            step(static_tokens, position, cache)
    torch.cuda.current_stream(tokens.device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        logits = step(static_tokens, position, cache)
    return StepGraph(graph, static_tokens, position, logits)


def graphed_step(lm: MusicGenLM, tokens: torch.Tensor, cache: LMCache) -> torch.Tensor:
    """`lm(tokens, cache)` for one frame, replayed from the cache's graph (captured on first
    use). The logits are the graph's output buffer: read them before the next step."""
    if cache.length >= cache.capacity:
        raise RuntimeError(f"KV cache holds {cache.capacity} frames; asked for {cache.length + 1}")
    step = cache.graph
    if not isinstance(step, StepGraph) or step.tokens.shape != tokens.shape:
        step = cache.graph = capture(lm, tokens, cache)
    step.tokens.copy_(tokens)
    step.position.fill_(cache.length)
    step.graph.replay()
    cache.length += 1
    return step.logits
