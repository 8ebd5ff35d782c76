"""Python bindings of the CPU ops (`csrc/ops.cpp`) of one build: `build.kernels()` gives them.

The ops take float32 activations and the weights in `layout`'s packed form:
- `int8_linear`: x [M, K] @ int8 weight.T x per-row scales (GELU in the kernel if asked:
  torch's own GELU on a few thousand values costs more in thread start-up than arithmetic);
- `fp32_linear`: x [M, K] @ float32 weight.T;
- `attend_one`: one query's attention over a float16 or an int8 KV cache;
- `decoder_step`: a whole decoder's one-frame step (see `tunesmith.engine.cpu_step`);
  `decoder_rows`: the same for rows at positions of their own (a running batch);
- `top_k_filter`, `multinomial_one`: sampling's two slow parts, as torch computes them;
  `sample_rows`: temperature, top-k, softmax and the draw in one call.
Each build registers them under its own namespace (`isa.Isa.namespace`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from . import layout


@dataclass(frozen=True)
class Kernels:
    """The ops of one loaded build, by its torch namespace."""

    namespace: str

    @property
    def name(self) -> str:
        """The build's instruction set (`avx2`, `avxvnni`, `avx512vnni`)."""
        return self.namespace.removeprefix("tunesmith_")

    def _op(self, name: str) -> Any:
        return getattr(getattr(torch.ops, self.namespace), name)

    @property
    def int8_block(self) -> layout.Block:
        """The blocks this build's int8 products read their packed weights in."""
        rows, cols = self._op("int8_block")()
        return layout.Block(rows, cols)

    def int8_linear(
        self,
        x: torch.Tensor,
        packed: torch.Tensor,
        scales: torch.Tensor,
        kc: int,
        gelu: bool = False,
    ) -> torch.Tensor:
        """x float32 [M, K] (contiguous) -> float32 [M, N], GELU applied if `gelu`."""
        return self._op("int8_linear")(x, packed, scales, kc, gelu)

    def fp32_linear(self, x: torch.Tensor, packed: torch.Tensor, n: int, kc: int) -> torch.Tensor:
        """x float32 [M, K] (contiguous) -> float32 [M, N]."""
        return self._op("fp32_linear")(x, packed, n, kc)

    def attend_one(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        n: int,
        mask: torch.Tensor | None = None,
        scales: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Attention of q [B, H, 1, hd] float32 over the first n frames of k, v [B, H, T, hd]
        float16, or int8 with `scales` (keys', values') [B, H, T] float32 (`models.kv_int8`),
        with an optional additive mask [B, n] float32 -> [B, H, 1, hd] float32."""
        empty = q.new_empty(0)
        k_scale, v_scale = (empty, empty) if scales is None else scales
        return self._op("attend_one")(q, k, v, n, empty if mask is None else mask, k_scale, v_scale)

    def decoder_step(
        self,
        weights: list[torch.Tensor],
        dims: list[int],
        sizes: list[int],
        eps: float,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        position: int,
        kv: list[torch.Tensor],
        mask: torch.Tensor,
        cross_rows: int,
        threads: int,
        guidance: float | None = None,
        draw: tuple[float, int, torch.Generator | None] | None = None,
        into: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One frame's tokens [B, K, 1] int64 at `position`, embedded (the codebooks' tables
        are the last weights) with row `position` of `positions` [T, D] added, through every
        layer and head -> logits [B, K, V] float32, on at most `threads` threads (and at most
        torch's count); with `guidance`, the rows are a guided batch (conditional rows first)
        and the result its guided logits [B/2, K, V]; with `draw` (temperature, top-k,
        generator), the tokens `sample_rows` draws from those logits, [B, K] (or [B/2, K])
        int64, also written into each block of rows of `into` [R, K] if given."""
        scale = 1.0 if guidance is None else guidance
        temperature, top_k, generator = draw if draw is not None else (1.0, 0, None)
        return self._op("decoder_step")(
            weights, dims, sizes, eps, tokens, positions, position, kv, mask, cross_rows,
            threads, guidance is not None, scale, draw is not None, temperature, top_k,
            generator, into,
        )  # fmt: skip

    def decoder_rows(
        self,
        weights: list[torch.Tensor],
        dims: list[int],
        sizes: list[int],
        eps: float,
        tokens: torch.Tensor,
        table: torch.Tensor,
        positions: torch.Tensor,
        slots: torch.Tensor,
        kv: list[torch.Tensor],
        text_rows: torch.Tensor,
        text_words: torch.Tensor,
        threads: int,
    ) -> torch.Tensor:
        """`decoder_step` for rows at positions of their own: row b's frame tokens[b] at
        frame positions[b] (int64 [B]) of cache row slots[b] (the cache's rows are slots,
        [R, H, T, hd]), with row positions[b] of `table` [T, D] added; the first
        text_rows.numel() rows attend to the first text_words[b] words of text row
        text_rows[b] (of the cross keys and values [texts, H, S, hd]), no mask -> logits
        [B, K, V] float32. Each row's numbers are those of a step of its own."""
        return self._op("decoder_rows")(
            weights, dims, sizes, eps, tokens, table, positions, slots, kv, text_rows,
            text_words, threads,
        )  # fmt: skip

    def top_k_filter(self, logits: torch.Tensor, k: int) -> torch.Tensor:
        """logits [..., V] float32, -inf below each row's k-th largest (ties with it kept)."""
        return self._op("top_k_filter")(logits, k)

    def multinomial_one(
        self, probs: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """probs [R, V] float32 -> [R, 1] int64: `torch.multinomial(probs, 1, generator=...)`,
        the same index and the same generator state after, without drawing a logarithm for
        each zero."""
        return self._op("multinomial_one")(probs, generator)

    def sample_rows(
        self,
        logits: torch.Tensor,
        temperature: float,
        top_k: int,
        generator: torch.Generator | None = None,
        threads: int = 1,
    ) -> torch.Tensor:
        """logits [R, V] float32 -> [R, 1] int64: torch's division by `temperature`, top-k
        filter (0 < top_k < V), softmax and multinomial draw, in one call, the rows shared by
        `threads` threads (the same tokens on any count)."""
        return self._op("sample_rows")(logits, temperature, top_k, generator, threads)

    def register_fakes(self) -> None:
        """Register `FAKES` under this build's namespace, once it is loaded (torch refuses a
        fake for an unknown op)."""
        for name, fake in FAKES.items():
            _register(f"{self.namespace}::{name}", fake)


# Output shapes of the ops that a compiled step traces (the schemas are in ops.cpp).
FAKES: dict[str, Callable[..., torch.Tensor]] = {
    "int8_linear": lambda x, packed, scales, kc, gelu=False: x.new_empty(
        x.shape[0], scales.shape[0]
    ),
    "fp32_linear": lambda x, packed, n, kc: x.new_empty(x.shape[0], n),
    "attend_one": lambda q, k, v, n, mask, k_scale, v_scale: torch.empty_like(
        q, memory_format=torch.contiguous_format
    ),
}


def _register(name: str, fake: Callable[..., Any]) -> None:
    torch.library.register_fake(name)(fake)
