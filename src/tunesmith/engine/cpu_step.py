"""A decoder's one-frame step on a CPU as one C++ call (`kernels/cpu/csrc/decoder.h`).

Once the products read their weights at memory bandwidth, what is left of a step is
everything around them: ~24 x 15 small operations (norms, residual adds, cache writes, head
splits), each a dispatch through torch and, for most, a parallel region whose thread start-up
costs more than its work on 2 x 1024 values. Compiling the step (`compiled_step`) merges some
of them but leaves several ms of loops and guards per step. Here the whole step runs inside
one OpenMP parallel region (the C++ file says how).

It applies to a decoder whose every product is packed for our kernels, all int8 with an
int8 KV cache (`models.kv_int8`) or all float32 (what `prepare.fuse` makes of a decoder on an
x86-64 CPU); other decoders, and prefills of many frames, run module by module
(`CpuKernelStep` hands them to the eager twin).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import torch
from torch import nn

from ..kernels.cpu.ops import Kernels
from ..models.lm import (
    CacheLayout,
    DecoderLayer,
    LayerNorm,
    LMCache,
    MusicGenLM,
    check_room,
)
from .int8 import Int8Linear
from .memory import mapped_kv_buffers
from .packed import PackedLinear
from .running_batch import KVPool, RowBatch
from .step import Draw, EagerStep
from .threads import ThreadChooser


@dataclass
class CpuStep:
    """One decoder's packed weights (int8 or float32), in the order the C++ step reads them
    (the decoder's own tensors, not copies), and what else it needs to know."""

    tensors: list[torch.Tensor]  # last, the codebooks' embedding tables (the step embeds)
    dims: list[int]  # each product's outputs and K-chunk
    sizes: list[int]  # layers, heads, codebooks, cross-attention (1) or not (0)
    eps: float  # the LayerNorms' epsilon
    kv_dtype: torch.dtype  # the cache it steps on: int8 (int8 weights) or float32
    kernels: Kernels  # the build its weights were packed for

    @classmethod
    def for_decoder(cls, lm: MusicGenLM) -> CpuStep | None:
        """The step for `lm` if every product of its steps is packed for our CPU kernels,
        all int8 with an int8 cache or all float32 (what `fuse` makes of a decoder on a
        CPU); else None."""
        tensors: list[torch.Tensor] = []
        dims: list[int] = []
        kinds: set[type] = set()  # Int8Linear or PackedLinear: one kind for the whole step
        builds: set[Kernels] = set()  # the kernel builds they were packed for: one
        eps: set[float] = set()  # the norms' epsilons: one for the whole step
        empty = torch.empty(0)

        def norm(module: LayerNorm) -> bool:
            w, b = module.weight, module.bias
            if w is None or b is None or w.dtype != torch.float32 or b.dtype != torch.float32:
                return False
            tensors.extend([w.detach(), b.detach()])
            eps.add(module.eps)
            return True

        def linear(module: object) -> bool:
            if (
                isinstance(module, Int8Linear)
                and module.scales_f32 is not None
                and module.kernels is not None
            ):
                tensors.extend([module.weight, module.scales_f32])
                builds.add(module.kernels)
            elif isinstance(module, PackedLinear):
                tensors.extend([module.weight, empty])
                builds.add(module.kernels)
            else:
                return False
            kinds.add(type(module))
            dims.extend([module.out_features, cast(int, module.chunk)])
            return True

        layers = [cast(DecoderLayer, layer) for layer in lm.layers]
        cross = all(hasattr(layer, "encoder_attn") for layer in layers)  # not in melody's
        for layer in layers:
            parts = [
                norm(layer.self_attn_layer_norm),
                linear(layer.self_attn.qkv_proj),
                linear(layer.self_attn.out_proj),
            ]
            if cross:
                parts += [
                    norm(layer.encoder_attn_layer_norm),
                    linear(layer.encoder_attn.q_proj),
                    linear(layer.encoder_attn.out_proj),
                ]
            parts += [norm(layer.final_layer_norm), linear(layer.fc1), linear(layer.fc2)]
            if not all(parts):
                return None
        if not norm(lm.layer_norm) or not all([linear(head) for head in lm.lm_heads]):
            return None
        tables = [cast(nn.Embedding, table).weight.detach() for table in lm.embed_tokens]
        if any(t.dtype != torch.float32 or not t.is_contiguous() for t in tables):
            return None
        tensors.extend(tables)
        # int8 weights step on an int8 cache (`models.kv_int8`: packed int8 weights stream
        # fast enough that wider keys and values would be a large share of each step's
        # reads; two thirds at 16 rows and 500 frames in float16), float32 ones on float32.
        kv_dtype = torch.int8 if kinds == {Int8Linear} else torch.float32
        if len(eps) != 1 or len(kinds) != 1 or len(builds) != 1:
            return None
        sizes = [len(layers), lm.cfg.num_heads, lm.cfg.num_codebooks, int(cross)]
        return cls(tensors, dims, sizes, eps.pop(), kv_dtype, builds.pop())

    def __call__(
        self,
        tokens: torch.Tensor,
        position: int,
        cache: LMCache,
        positions: torch.Tensor,
        threads: int | None = None,
        guidance: float | None = None,
        draw: Draw | None = None,
        into: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """tokens [B, K, 1] of the frame at `position` (embedded in C++, with row `position`
        of `positions` added) -> logits [B, K, V] float32 on `threads` threads (default
        torch's count), or with `guidance` the guided logits [B/2, K, V] of a guided batch,
        or with `draw` the tokens drawn from those logits [B or B/2, K], also written into
        `into` if given (see `Kernels.decoder_step`); writes the frame's keys and values into
        `cache`."""
        kv = kv_tensors(cache)
        mask, rows = cache.cross_mask, cache.cross_rows
        # An additive mask (new_cache's) [rows, 1, 1, S], read as [rows, S].
        flat = (
            tokens.new_empty(0, dtype=torch.float32)
            if mask is None or rows == 0
            else mask.reshape(rows, -1).float()
        )
        n = threads if threads is not None else torch.get_num_threads()
        drawing = None if draw is None else (draw.temperature, draw.top_k, draw.generator)
        return self.kernels.decoder_step(
            self.tensors, self.dims, self.sizes, self.eps, tokens, positions, position, kv,
            flat, rows, n, guidance, drawing, into,
        )  # fmt: skip

    def rows(
        self,
        tokens: torch.Tensor,
        pool: KVPool,
        batch: RowBatch,
        positions: torch.Tensor,
        threads: int | None = None,
    ) -> torch.Tensor:
        """tokens [B, K, 1] of a running batch's rows, each at its own frame of its own place
        in `pool` (positions: the pool's positional rows) -> logits [B, K, V] float32 on
        `threads` threads (default torch's count), each row's those of a step of its own
        (`Kernels.decoder_rows`); writes each row's keys and values."""
        n = threads if threads is not None else torch.get_num_threads()
        text_rows = [g.place for g in batch.groups]
        words = [pool.words[place] for place in text_rows]
        return self.kernels.decoder_rows(
            self.tensors, self.dims, self.sizes, self.eps, tokens, positions,
            batch.positions(), batch.slots(pool.places), kv_tensors(pool.cache),
            torch.tensor(text_rows if self.sizes[3] else [], dtype=torch.long),
            torch.tensor(words if self.sizes[3] else [], dtype=torch.long), n,
        )  # fmt: skip


def kv_tensors(cache: LMCache) -> list[torch.Tensor]:
    """A cache's tensors as the C++ step takes them: per layer self keys, self values, cross
    keys, cross values (and an int8 cache's key and value scales)."""
    kv = []
    for layer in cache.layers:
        kv += [layer.self_k, layer.self_v, layer.cross_k, layer.cross_v]
        if layer.self_k_scale is not None and layer.self_v_scale is not None:
            kv += [layer.self_k_scale, layer.self_v_scale]  # an int8 cache's
    return kv


@dataclass
class CpuKernelStep(EagerStep):
    """One-frame steps in one C++ call (`CpuStep`), on a cache of the step's dtype in one
    anonymous mapping (`memory.mapped_kv_buffers`: the C++ step reads it through raw
    pointers, and its pages go back to the system when the generation ends), on as many
    threads as measure fastest now (`threads.ThreadChooser`: fewer when a core is busy);
    prefills, and caches the step did not make, module by module."""

    kernel: CpuStep | None = None
    chooser: ThreadChooser = field(default_factory=ThreadChooser)

    @classmethod
    def for_decoder(cls, lm: MusicGenLM, kernel: CpuStep) -> CpuKernelStep:
        layout = CacheLayout(dtype=kernel.kv_dtype, allocate=mapped_kv_buffers)
        return cls(lm, layout, kernel)

    def __call__(self, tokens: torch.Tensor, cache: LMCache) -> torch.Tensor:
        if not self._steps(tokens, cache):
            return super().__call__(tokens, cache)
        return self._step(tokens, cache)[:, :, None]

    def rows(self, tokens: torch.Tensor, pool: KVPool, batch: RowBatch) -> torch.Tensor:
        """One-frame steps of every row in one C++ call; more frames module by module."""
        if not self._steps(tokens, pool.cache):
            return super().rows(tokens, pool, batch)
        kernel = cast(CpuStep, self.kernel)
        positions = self.lm.buffer_positions(pool.cache)
        return self.chooser.run(
            torch.get_num_threads(),
            lambda threads: kernel.rows(tokens, pool, batch, positions, threads),
        )

    def guided(self, tokens: torch.Tensor, cache: LMCache, scale: float) -> torch.Tensor:
        """The guidance mixed in the C++ step, by each thread on its own columns (reading
        every row's logits back on the main thread took ~0.2 ms a step)."""
        if not self._steps(tokens, cache):
            return super().guided(tokens, cache, scale)
        return self._step(tokens, cache, scale)

    def drawn(
        self,
        tokens: torch.Tensor,
        cache: LMCache,
        scale: float | None,
        draw: Draw,
        into: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        """The tokens drawn (and written into `into`) in the same C++ call as the step (back
        in Python, the first op alone costs ~0.1 ms of cold code after the step streamed the
        weights)."""
        on_cpu = draw.generator is None or draw.generator.device.type == "cpu"
        if not on_cpu or not self._steps(tokens, cache):
            return None
        return self._step(tokens, cache, scale, draw, into)

    def _steps(self, tokens: torch.Tensor, cache: LMCache) -> bool:
        """Whether the C++ step takes this call (one frame, on a cache it made)."""
        keys = cache.layers[0].self_k
        return (
            self.kernel is not None
            and tokens.shape[-1] == 1
            and keys.dtype == self.kernel.kv_dtype
            and keys.device.type == "cpu"
        )

    def _step(
        self,
        tokens: torch.Tensor,
        cache: LMCache,
        guidance: float | None = None,
        draw: Draw | None = None,
        into: torch.Tensor | None = None,
    ) -> torch.Tensor:
        kernel = cast(CpuStep, self.kernel)
        start = cache.length
        check_room(cache, start + 1)
        positions = self.lm.buffer_positions(cache)
        logits = self.chooser.run(
            torch.get_num_threads(),
            lambda threads: kernel(tokens, start, cache, positions, threads, guidance, draw, into),
        )
        cache.length = start + 1
        return logits
