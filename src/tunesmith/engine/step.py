"""The `Step` interface: how the decode loop runs the decoder, whatever runs it underneath.

The loop (`generation.loop`) asks a step for a cache and then feeds it frames; it never knows
whether a one-frame step is the model's own eager `forward`, one C++ call (`cpu_step`), a
torch.compile graph (`compiled_step`) or a CUDA graph replay (`cuda_graphs`). Each fast step
keeps the eager one as its twin for everything it does not cover (prefills of many frames,
other caches), and the tests compare each against it.

Prefills run in chunks of `PREFILL_CHUNK` frames, alone as in a running batch
(`running_batch`), where a joining job's prompt goes in between steps, a chunk a few layers at
a time: the same chunks give the same numbers (torch's products pick their kernels by the rows
they get, and its attention splits its work by the queries), so a job's codes do not depend
on whether it ran alone or joined others.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Protocol

import torch

from ..config import LMConfig
from ..models.lm import CacheLayout, LayerCache, LMCache, MusicGenLM
from .running_batch import KVPool, RowBatch, eager_rows

# Frames a prefill feeds the decoder at a time (a running batch then feeds a chunk a few
# layers at a time between its steps): 128 rows at most when guided, still in our kernels.
PREFILL_CHUNK = 64


@dataclass(frozen=True)
class Draw:
    """A token draw a step may run itself, right after its logits (`Step.drawn`): torch's
    division by `temperature`, top-k filter (0 < top_k < V; else none), softmax and one
    multinomial draw per row from `generator`, with torch's results and use of the stream."""

    temperature: float
    top_k: int
    generator: torch.Generator | None


def guide(logits: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: [2B, ...] logits, conditional rows first -> [B, ...]."""
    cond, uncond = logits.chunk(2, dim=0)
    return uncond + scale * (cond - uncond)


def keep_rows(cache: LMCache, rows: slice, text_rows: slice) -> LMCache:
    """The cache of a batch that keeps only `rows` (a contiguous run), whose text rows are
    `text_rows` of the cache's: views of the same buffers (no copy; the keys and values
    already written stay), as a new cache, so that what a step kept with the old one (a CUDA
    graph of its shapes) is not reused. The rows seeing text must lead the kept run."""

    def cut(t: torch.Tensor | None, part: slice) -> torch.Tensor | None:
        return None if t is None else t[part]

    layers = []
    for layer in cache.layers:
        self_kv = (layer.self_k[rows], layer.self_v[rows])
        cross_kv = (layer.cross_k[text_rows], layer.cross_v[text_rows])
        scales = (cut(layer.self_k_scale, rows), cut(layer.self_v_scale, rows))
        layers.append(LayerCache(*self_kv, *cross_kv, *scales))
    text = range(cache.cross_rows)[text_rows]
    return dataclasses.replace(
        cache,
        layers=layers,
        cross_mask=cut(cache.cross_mask, text_rows),
        cross_rows=len(text),
        step_state=None,
    )


class Step(Protocol):
    """A decoder and the way its steps run."""

    @property
    def lm(self) -> MusicGenLM: ...

    def new_cache(
        self, batch: int, capacity: int, text: torch.Tensor, text_mask: torch.Tensor
    ) -> LMCache:
        """A KV cache laid out for this step (see `MusicGenLM.new_cache`)."""
        ...

    def new_pool(self, places: int, frames: int) -> KVPool:
        """A running batch's KV cache laid out for this step: `places` jobs of up to two rows,
        `frames` frames each (see `running_batch.KVPool`)."""
        ...

    def __call__(self, tokens: torch.Tensor, cache: LMCache) -> torch.Tensor:
        """tokens [B, K, T] at cache.length.. -> logits [B, K, T, V] float32; advances the
        cache by T frames."""
        ...

    def guided(self, tokens: torch.Tensor, cache: LMCache, scale: float) -> torch.Tensor:
        """tokens [2B, K, T] of a guided batch (conditional rows first) -> the last frame's
        guided logits [B, K, V] (`guide`); advances the cache by T frames."""
        ...

    def rows(self, tokens: torch.Tensor, pool: KVPool, batch: RowBatch) -> torch.Tensor:
        """tokens [B, K, T] of a running batch's rows (`running_batch.RowBatch`: each job's
        rows at their own position, in their own place of `pool`) -> the logits of each row's
        last frame [B, K, V] float32, each row's numbers those it would have alone; writes
        their keys and values. The caller advances each job's frames by T."""
        ...

    def drawn(
        self,
        tokens: torch.Tensor,
        cache: LMCache,
        scale: float | None,
        draw: Draw,
        into: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        """The next tokens [B, K] drawn by the step itself from the last frame's logits
        (guided if `scale`: tokens is then a guided batch of 2B rows), also written into each
        block of B rows of `into` [R, K] if given (the loop's sequence column); or None, the
        cache and `into` untouched, where this step does not draw."""
        ...


@dataclass
class EagerStep:
    """Module by module, as the model is written (the twin every other step is tested
    against)."""

    lm: MusicGenLM
    layout: CacheLayout = field(default_factory=CacheLayout)

    @property
    def config(self) -> LMConfig:
        return self.lm.cfg

    def new_cache(
        self, batch: int, capacity: int, text: torch.Tensor, text_mask: torch.Tensor
    ) -> LMCache:
        return self.lm.new_cache(batch, capacity, text, text_mask, self.layout)

    def new_pool(self, places: int, frames: int) -> KVPool:
        return KVPool(self.lm, places, frames, self.layout)

    def __call__(self, tokens: torch.Tensor, cache: LMCache) -> torch.Tensor:
        if tokens.shape[-1] <= PREFILL_CHUNK:
            return self.lm(tokens, cache)
        chunks = tokens.split(PREFILL_CHUNK, dim=-1)
        return torch.cat([self.lm(chunk, cache) for chunk in chunks], dim=2)

    def rows(self, tokens: torch.Tensor, pool: KVPool, batch: RowBatch) -> torch.Tensor:
        """Each job's rows on their own, module by module (as `EagerStep.__call__`)."""
        return eager_rows(lambda t, cache: EagerStep.__call__(self, t, cache), tokens, pool, batch)

    def guided(self, tokens: torch.Tensor, cache: LMCache, scale: float) -> torch.Tensor:
        return guide(self(tokens, cache)[:, :, -1], scale)

    def drawn(
        self,
        tokens: torch.Tensor,
        cache: LMCache,
        scale: float | None,
        draw: Draw,
        into: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        return None  # the loop samples (generation.sampling)
