"""torch.compile for the one-frame decoder step (`TorchCompileStep`, opt-in with compile=True).

A step runs ~25 small operations per layer on 2 rows; eager, each costs dispatcher and
Python time. Inductor fuses the layer norms, residual adds, GELU and layout changes into a
few C++ loops around the matrix products (which stay calls to their kernels: our float32,
int8 and attention custom ops, `kernels.cpu.ops`). At musicgen-small sizes on 2 cores that took
~1-3 ms off an int8 step of ~20 ms (benchmarks/bench_step.py). Decoders on an x86-64 CPU
run their steps in `cpu_step` instead (one C++ call, faster still), so this serves
where that step does not apply (no AVX2 or no compiler for our kernels).

Choices, measured on 2 CPU cores:
- `dynamic=True`: the attended length grows by one frame per step. Marked dynamic from the
  start, one graph serves every position and cache capacity (sizes 0 and 1 are still
  specialized: a batch without guidance, or one text row against several, compiles once
  more); a static graph
  either recompiles per step or attends over the whole preallocated cache (masked), which
  reads up to twice the keys and values and was slower than eager.
- The first two positions run eager (see `TorchCompileStep`): compile specializes the
  integers 0 and 1, and would compile twice more for them.
- `fullgraph=True`: a graph break would silently bring back the per-op overhead.
- No `cpp_wrapper`: it more than doubled compile time (~140 s) for a gain within noise.

Compiling musicgen-small takes ~45-55 s on 2 busy cores; with inductor's on-disk cache
(/tmp/torchinductor_$USER) warm, a later process still traces for ~20 s. `warm_up` does it
at load time rather than in the first generation.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..models.lm import LMCache, MusicGenLM
from .running_batch import KVPool, RowBatch, eager_rows
from .step import EagerStep


def compile_forward() -> CompiledForward:
    """`MusicGenLM.forward` compiled for one-frame steps: the unbound function, taking the
    module as its first argument, so that copies of a module keep calling their own weights."""
    eager = MusicGenLM.forward
    return CompiledForward(torch.compile(eager, fullgraph=True, dynamic=True), eager)


class CompiledForward:
    """A compiled forward that skips dynamo's guard checks for the one kind of call `warm_up`
    compiled and checked: evaluating the guards (on every weight and cache tensor) took ~1 ms
    of a ~20 ms int8 step. Safe for that kind only because warm-up traced it with sizes no
    model dimension has (so the graph assumes no accidental equalities), and because the
    Python-level branches of a step depend only on what `step_kind` compares; every other
    call runs the guards as usual (and compiles again where they fail)."""

    def __init__(
        self, compiled: Callable[..., torch.Tensor], eager: Callable[..., torch.Tensor]
    ) -> None:
        self.compiled = compiled
        self.eager = eager  # what runs once dynamo will compile no more variants
        self.exhausted = False
        self.trusted: tuple[object, ...] | None = None  # the warm-up's step_kind

    def __call__(self, lm: torch.nn.Module, tokens: torch.Tensor, cache: Any) -> torch.Tensor:
        if self.exhausted:
            return self.eager(lm, tokens, cache)
        try:
            return self._compiled(lm, tokens, cache)
        except Exception as error:
            # dynamo keeps at most `recompile_limit` (8) graphs of one function per process;
            # with fullgraph=True the next variant is an error, raised before the step runs.
            # Many kinds of call in one process (tests, a server with many batch shapes) can
            # get there: the eager step gives the same result.
            if "recompile" not in f"{error} {error.__cause__}".lower():
                raise
            warnings.warn(
                f"compiled decoder step: {error.__class__.__name__} (too many compiled "
                "variants in this process); running steps eagerly from now on",
                stacklevel=2,
            )
            self.exhausted = True
            return self.eager(lm, tokens, cache)

    def _compiled(self, lm: torch.nn.Module, tokens: torch.Tensor, cache: Any) -> torch.Tensor:
        if step_kind(tokens, cache) == self.trusted:
            try:
                with torch.compiler.set_stance("default", skip_guard_eval_unsafe=True):
                    return self.compiled(lm, tokens, cache)
            except RuntimeError as error:  # raised before running: it needs another graph
                if "skip_guard_eval_unsafe" not in str(error):
                    raise
                self.trusted = None  # something step_kind does not see differs: guards again
        return self.compiled(lm, tokens, cache)


def step_kind(tokens: torch.Tensor, cache: Any) -> tuple[object, ...]:
    """What a compiled step's graph depends on besides sizes it treats as symbols: rows, rows
    with text, padding mask or not, a one-token text (sizes 0 and 1 are specialized), dtypes
    and devices."""
    layer = cache.layers[0]
    return (
        tuple(tokens.shape),
        tokens.device,
        cache.cross_rows,
        cache.cross_mask is None,
        layer.cross_k.shape[2] == 1,
        layer.self_k.dtype,
        layer.cross_k.dtype,
    )


@dataclass
class TorchCompileStep(EagerStep):
    """One-frame steps from position 2 on through `compiled` (torch.compile specializes the
    integers 0 and 1: the steps at positions 0 and 1 would each cost a compile of their own;
    from 2 on, one graph serves every position); everything else eager."""

    compiled: CompiledForward = field(default_factory=compile_forward)

    def __call__(self, tokens: torch.Tensor, cache: LMCache) -> torch.Tensor:
        if tokens.shape[-1] == 1 and cache.length >= 2:
            return self.compiled(self.lm, tokens, cache)
        return super().__call__(tokens, cache)

    def rows(self, tokens: torch.Tensor, pool: KVPool, batch: RowBatch) -> torch.Tensor:
        """Each job's rows through the compiled step on their own (the graph takes any
        length: a job's rows at any position, in their place of the pool, are one call)."""
        return eager_rows(self, tokens, pool, batch)


@torch.inference_mode()
def warm_up(step: TorchCompileStep, batch: int = 2, text_rows: int = 1) -> TorchCompileStep:
    """Compile now rather than in the first generation: two steps over a throwaway cache
    shaped like a guided batch (`batch` rows, `text_rows` with text).

    The sizes matter, not the values: compile gives sizes 0 and 1 graphs of their own, and
    merges sizes that happen to be equal (a 4-frame cache with 4 codebooks would pin the
    cache to 4 frames), so the text, cache and position are odd sizes no model dimension has.
    """
    lm = step.lm
    p = next(lm.parameters())
    text = torch.zeros(text_rows, 9, lm.cfg.hidden_size, device=p.device, dtype=p.dtype)
    cache = step.new_cache(batch, 37, text, torch.ones(text_rows, 9, device=p.device))
    cache.length = 29
    tokens = torch.zeros(batch, lm.cfg.num_codebooks, 1, dtype=torch.long, device=p.device)
    for _ in range(2):
        step(tokens, cache)
    step.compiled.trusted = step_kind(tokens, cache)
    return step
