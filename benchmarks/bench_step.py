"""Decoder step time at musicgen-small sizes: int8 kernels, compiled or not, and fp32.

    python benchmarks/bench_step.py --folder /tmp/ts-small      # reuse a checkpoint folder
    python benchmarks/bench_step.py --rounds 3 --position 400

One guided step (2 rows: conditional and unconditional) at a given cache position, the
median of `--steps` steps. All variants live in one process and run in alternation, round
by round, so a busy machine slows them alike; the table gives each variant's median over
rounds. Variants (each an engine `Step`): int8 with torch's `_weight_int8pack_mm` (bfloat16
activations), int8 with tunesmith's int8 kernel module by module (`EagerStep`: float32 KV
cache, torch's attention), the same compiled (`TorchCompileStep`), int8 as tunesmith runs it
(`CpuKernelStep`: the whole step in one C++ call, float16 KV cache), and float32 with torch's
F.linear, with tunesmith's float32 kernel module by module, and in one C++ call
(`--fp32-only`: just those three).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from tunesmith import MusicGen
from tunesmith.engine.compiled_step import TorchCompileStep, warm_up
from tunesmith.engine.int8 import Int8Linear
from tunesmith.engine.packed import PackedLinear
from tunesmith.engine.step import EagerStep, Step
from tunesmith.models.lm import MusicGenLM


def module_by_module(lm: MusicGenLM) -> EagerStep:
    """A copy of a decoder whose steps run module by module (not in one C++ call)."""
    return EagerStep(copy.deepcopy(lm))


def with_torch_int8(lm: MusicGenLM) -> EagerStep:
    """A copy of an int8 decoder that uses torch's kernel (the weights unpacked)."""
    twin = module_by_module(lm)
    for module in twin.lm.modules():
        if isinstance(module, Int8Linear) and module.chunk is not None:
            module.weight, module.chunk, module.scales_f32 = module.unpacked_weight(), None, None
    return twin


def with_torch_fp32(lm: MusicGenLM) -> EagerStep:
    """A copy of a float32 decoder that uses torch's F.linear (the weights unpacked)."""
    twin = module_by_module(lm)
    for name, module in list(twin.lm.named_modules()):
        if isinstance(module, PackedLinear):
            linear = torch.nn.Linear(module.in_features, module.out_features, bias=False)
            linear.weight = torch.nn.Parameter(module.unpacked_weight(), requires_grad=False)
            parent, _, attr = name.rpartition(".")
            setattr(twin.lm.get_submodule(parent), attr, linear)
    return twin


def step_ms(step: Step, text: torch.Tensor, position: int, steps: int) -> float:
    """Median ms of `steps` one-frame steps from `position` on a fresh cache."""
    times = []
    with torch.inference_mode():  # as in generation (compile guards on it)
        tokens = torch.randint(0, 2048, (2, step.lm.cfg.num_codebooks, 1))
        cache = step.new_cache(2, position + steps + 1, text, torch.ones(text.shape[:2]))
        cache.length = position  # the keys and values' values do not change the time
        for _ in range(steps):
            start = time.perf_counter()
            step(tokens, cache)
            times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", help="a musicgen-small-sized checkpoint (default: build one)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--position", type=int, default=250, help="frames already in the cache")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-fp32", action="store_true")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--fp32-only", action="store_true", help="only the two float32 variants")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder
        if folder is None:
            from tunesmith.testing.checkpoints import build_checkpoint

            print("building a random checkpoint at musicgen-small sizes...", file=sys.stderr)
            folder = str(build_checkpoint(Path(tmp) / "small", "small"))
        fp32 = MusicGen.from_pretrained(folder, device="cpu")
        text = fp32.condition(["lofi hip hop beat with soft piano"]).states
        variants: dict[str, Step] = {}
        if not args.fp32_only:
            int8 = MusicGen.from_pretrained(folder, device="cpu", quantize="int8")
            variants["int8, torch kernel"] = with_torch_int8(int8.model.decoder)
            variants["int8, our kernel, module by module"] = module_by_module(int8.model.decoder)
            variants["int8, the whole step in C++"] = int8.step
        if not (args.no_compile or args.fp32_only):
            start = time.perf_counter()
            compiled = warm_up(TorchCompileStep(copy.deepcopy(int8.model.decoder)))
            print(f"compile warm-up: {time.perf_counter() - start:.1f} s", file=sys.stderr)
            variants["int8, our kernel, compiled"] = compiled
        if not args.no_fp32:
            variants["float32, torch F.linear"] = with_torch_fp32(fp32.model.decoder)
            variants["float32, our kernel, module by module"] = module_by_module(fp32.model.decoder)
            variants["float32, the whole step in C++"] = fp32.step

    runs: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(args.rounds):
        for name, step in variants.items():
            runs[name].append(step_ms(step, text, args.position, args.steps))
        print(
            f"round {r + 1}: " + ", ".join(f"{v[-1]:.1f}" for v in runs.values()), file=sys.stderr
        )

    print(f"\ndecoder step, 2 rows, cache at {args.position} frames, {args.threads} threads")
    print("| variant | ms/step (median of rounds) | min | max |")
    print("|---|---|---|---|")
    for name, values in runs.items():
        med = statistics.median(values)
        print(f"| {name} | {med:.1f} | {min(values):.1f} | {max(values):.1f} |")


if __name__ == "__main__":
    main()
