"""CUDA graphs for the one-frame decoder step: one launch per step instead of ~300 kernels.

On a GPU a musicgen-small step is a few hundred tiny kernels, and launching them costs more
than running them. `MusicGenLM.static_step` computes the step with shapes that never change
(the position is a tensor, attention runs over the whole KV buffer with later frames
masked), so it can be captured once per KV cache and replayed for every later step.

The graph lives on the cache it was captured with (`LMCache.step_state`): its inputs, outputs and
the cache's buffers stay at fixed addresses, and it goes when the cache goes (each window of a
long piece has its own cache and graph). The first step on a cache runs the function twice
on a side stream (warm-up, as capture requires), then captures it; every run writes the same
keys and values at the same position, so the warm-up runs leave nothing behind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..models.lm import CacheLayout, LMCache, MusicGenLM, check_room
from .step import EagerStep

StaticStep = Callable[[torch.Tensor, torch.Tensor, LMCache], torch.Tensor]
GRAPH_ALIGN = 64  # buffer frames: attention over all of it takes its mask without padding


@dataclass
class StepGraph:
    """A captured step and the static tensors it reads and writes."""

    graph: torch.cuda.CUDAGraph
    tokens: torch.Tensor  # [B, K, 1] long, copied in before each replay
    position: torch.Tensor  # [1] long
    logits: torch.Tensor  # [B, K, 1, V] float32, overwritten by each replay


def graph_layout() -> CacheLayout:
    """Caches for graph steps: a multiple of `GRAPH_ALIGN` frames on the GPU."""
    return CacheLayout(align=GRAPH_ALIGN)


@dataclass
class CudaGraphStep(EagerStep):
    """One-frame CUDA steps replayed from a graph of `static` (the model's fixed-shape step,
    or inductor's compile of it: `compile_static`), captured once per cache; everything else
    eager."""

    layout: CacheLayout = field(default_factory=graph_layout)
    static: StaticStep | None = None  # None: the model's own static_step

    def __call__(self, tokens: torch.Tensor, cache: LMCache) -> torch.Tensor:
        if tokens.shape[-1] != 1 or not tokens.is_cuda:
            return self.lm(tokens, cache)
        return graphed_step(self.lm, self.static or self.lm.static_step, tokens, cache)


def compile_static(lm: MusicGenLM) -> StaticStep:
    """`lm.static_step` through torch.compile (inductor fuses the norms, residual adds and
    cache writes into fewer kernels; the CUDA graph then replays those). Dynamic shapes: one
    compile serves every batch size and window length."""
    return torch.compile(lm.static_step, fullgraph=True, dynamic=True)


def capture(lm: MusicGenLM, step: StaticStep, tokens: torch.Tensor, cache: LMCache) -> StepGraph:
    """Capture `step` (lm's static step) for this cache, with `tokens` at `cache.length` as
    inputs. A compiled step compiles on the first warm-up run, if not yet."""
    static_tokens = tokens.clone()
    position = torch.tensor([cache.length], device=tokens.device)
    lm.prepare_static(cache)
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


def graphed_step(
    lm: MusicGenLM, static: StaticStep, tokens: torch.Tensor, cache: LMCache
) -> torch.Tensor:
    """`lm(tokens, cache)` for one frame, replayed from the cache's graph of `static`
    (captured on first use). The logits are the graph's output buffer: read them before the
    next step."""
    check_room(cache, cache.length + 1)
    graph = cache.step_state
    if not isinstance(graph, StepGraph) or graph.tokens.shape != tokens.shape:
        graph = capture(lm, static, tokens, cache)
        cache.step_state = graph
    graph.tokens.copy_(tokens)
    graph.position.fill_(cache.length)
    graph.graph.replay()
    cache.length += 1
    return graph.logits
