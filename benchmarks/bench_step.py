"""Decoder step time at musicgen-small sizes: int8 kernels, compiled or not, and fp32.

    python benchmarks/bench_step.py --folder /tmp/ts-small      # reuse a checkpoint folder
    python benchmarks/bench_step.py --rounds 3 --position 400

One guided step (2 rows: conditional and unconditional; `--prompts N`: 2N rows) at a given
cache position, the median of `--steps` steps. All variants live in one process and run in
alternation, round by round, so a busy machine slows them alike; the table gives each
variant's median over rounds. Variants (each an engine `Step`): int8 with torch's
`_weight_int8pack_mm` (bfloat16 activations), int8 with tunesmith's int8 kernel module by
module (`EagerStep`: float32 KV cache, torch's attention), the same compiled
(`TorchCompileStep`), int8 as tunesmith runs it (`CpuKernelStep`: the whole step in one C++
call, int8 KV cache), and float32 with torch's
F.linear, with tunesmith's float32 kernel module by module, and in one C++ call
(`--fp32-only`: just those three). With `--threads` above 1, the C++ int8 step also runs on
that many threads and on 1, fixed, beside the measured choice; `--busy N` keeps N cores busy
with spinning processes meanwhile (the measured choice should then be no slower than 1: the
last line gives the ratios, best round against best round; this is the guard that a test in
the default suite used to hold, where other programs on a shared machine moved it):

    python benchmarks/bench_step.py --busy 1 --no-compile --no-fp32 --rounds 5

Also measured in the same run: the machine's read bandwidth (a streaming sum of a 1 GiB
buffer, far past the caches, or the float32 C++ step's own rate where that is faster),
each variant's bytes read per step (its weights and scales, and the keys and values before
`--position`) as a share of that bandwidth, and the time an
int8 generation spends per step outside the decoder step (sampling with CFG and top-k, the
delay pattern, progress).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from tunesmith import MusicGen
from tunesmith.engine.compiled_step import TorchCompileStep, warm_up
from tunesmith.engine.cpu_step import CpuKernelStep
from tunesmith.engine.int8 import Int8Linear
from tunesmith.engine.packed import PackedLinear
from tunesmith.engine.step import EagerStep, Step
from tunesmith.engine.threads import ThreadChooser
from tunesmith.models.lm import MusicGenLM

FP32_STEP = "float32, the whole step in C++"


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


class FixedThreads(ThreadChooser):
    """A chooser that always takes `n` threads (to compare with the measured choice)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def choose(self, most: int) -> int:
        return min(self.n, most)

    def took(self, threads: int, wall: float, cpu: float) -> None:
        pass


def spinners(count: int) -> list[subprocess.Popen]:
    """`count` processes that keep a core busy each (a browser, a second job), for an hour at
    most; the caller kills them."""
    code = "import time\nend = time.time() + 3600\nwhile time.time() < end: pass"
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(count)]


def step_ms(step: Step, text: torch.Tensor, position: int, steps: int) -> float:
    """Median ms of `steps` one-frame steps from `position` on a fresh cache, for the
    prompts of `text` [N, S, D] and as many unconditional rows."""
    times = []
    rows = 2 * text.shape[0]
    with torch.inference_mode():  # as in generation (compile guards on it)
        tokens = torch.randint(0, 2048, (rows, step.lm.cfg.num_codebooks, 1))
        cache = step.new_cache(rows, position + steps + 1, text, torch.ones(text.shape[:2]))
        # The keys and values' values do not change the time, but their pages must exist:
        # an untouched (zero-page) cache reads as fast as the caches, not from memory.
        for layer in cache.layers:
            scales = (getattr(layer, "self_k_scale", None), getattr(layer, "self_v_scale", None))
            for part in (layer.self_k, layer.self_v, *scales):
                if part is None:
                    continue
                if part.dtype == torch.int8:
                    part[:, :, :position].random_(-127, 128)
                else:
                    part[:, :, :position].normal_()
        cache.length = position
        for _ in range(steps):
            start = time.perf_counter()
            step(tokens, cache)
            times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def read_bandwidth(threads: int, gigabytes: float = 1.0, repeats: int = 5) -> float:
    """The machine's read bandwidth (bytes/s): the best of a few plain streaming reads
    (a sum) of a buffer far larger than the caches, on the step's threads."""
    buffer = torch.ones(int(gigabytes * 2**30) // 4)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        buffer.sum()
        best = min(best, time.perf_counter() - start)
    return buffer.numel() * 4 / best


def bytes_per_step(step: Step, position: int, rows: int = 2) -> int:
    """What one step must read from memory: every weight and scale of the decoder (the token
    tables aside: a step reads 4 of their rows) and the self-attention keys and values of
    the `position` frames before it."""
    lm = step.lm
    seen: set[int] = set()
    total = 0
    for name, tensor in [*lm.named_parameters(), *lm.named_buffers()]:
        if "embed_tokens" in name or tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        total += tensor.numel() * tensor.element_size()
    cfg = lm.cfg
    kv = cfg.hidden_size * 4  # a frame's keys (or values) in float32, all heads
    if isinstance(step, CpuKernelStep) and step.kernel is not None:
        dtype = step.kernel.kv_dtype  # int8, with a float32 scale a head
        kv = cfg.hidden_size * dtype.itemsize + (4 * cfg.num_heads if dtype == torch.int8 else 0)
    total += 2 * cfg.num_layers * rows * position * kv
    return total


def outside_ms(model: MusicGen, steps: int = 150) -> tuple[float, float]:
    """(ms a step of generation spends outside the decoder's forward pass, ms in it): CFG,
    sampling with top-k, the delay pattern, progress, as `generate_tokens` runs them.

    The loop's own time is the wall time less the step calls. Where the step draws the
    tokens itself (`Step.drawn`: CFG and the draw in its C++ call), the draw is measured
    alone and added (`draw_in_call_ms`)."""
    inner = model.step
    spent: list[float] = []
    drew: list[bool] = []

    def timed(call: Callable[[], torch.Tensor | None], draws: bool) -> torch.Tensor | None:
        start = time.perf_counter()
        out = call()
        spent.append(time.perf_counter() - start)
        drew.append(draws and out is not None)
        return out

    class Timed:
        lm = inner.lm

        def __getattr__(self, name: str) -> object:
            return getattr(inner, name)

        def __call__(self, tokens: torch.Tensor, cache: object) -> torch.Tensor | None:
            return timed(lambda: inner(tokens, cache), False)

        def guided(self, tokens: torch.Tensor, cache: object, scale: float) -> torch.Tensor | None:
            return timed(lambda: inner.guided(tokens, cache, scale), False)

        def drawn(
            self, tokens: torch.Tensor, cache: object, scale: float, draw: object, into: object
        ) -> object:
            return timed(lambda: inner.drawn(tokens, cache, scale, draw, into), True)

    model.step = Timed()  # type: ignore[assignment]
    try:
        with model.token_stream("lofi beat", duration=steps / 50, seed=0, progress=True) as blocks:
            marks = [time.perf_counter() for _ in blocks]
    finally:
        model.step = inner
    # From the first block to the last: the per-call setup (T5, the cache) stays out.
    inner_steps = spent[1 : len(marks)]
    wall = marks[-1] - marks[0]
    per = len(marks) - 1
    loop = 1e3 * (wall - sum(inner_steps)) / per
    in_call = draw_in_call_ms(model, steps) if any(drew) else 0.0
    return loop + in_call, 1e3 * sum(inner_steps) / per - in_call


def draw_in_call_ms(model: MusicGen, steps: int) -> float:
    """Median ms of the draw that a step runs in its call (`Step.drawn`), measured alone: the
    same op on the same threads (`sample_rows`: CFG's mixed logits to tokens, 250 kept), as
    the first call after each guided step, when the step has streamed its weights through
    the caches as in the call. (A difference of two step calls, drawing and not, is lost in
    these VMs' step-to-step drift.)"""
    from tunesmith.engine.cpu_step import CpuKernelStep

    step = model.step
    assert isinstance(step, CpuKernelStep) and step.kernel is not None
    kernels = step.kernel.kernels
    text = model.condition(["lofi beat", None])
    cache = step.new_cache(2, steps + 1, text.states, text.mask)
    generator = torch.Generator().manual_seed(0)
    tokens = torch.zeros(2, step.lm.cfg.num_codebooks, 1, dtype=torch.long)
    took = []
    with torch.inference_mode():
        for _ in range(steps):
            logits = step.guided(tokens, cache, 3.0)
            threads = step.chooser.current or torch.get_num_threads()
            start = time.perf_counter()
            kernels.sample_rows(logits.view(-1, logits.shape[-1]), 1.0, 250, generator, threads)
            took.append(time.perf_counter() - start)
    return 1e3 * statistics.median(took)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", help="a musicgen-small-sized checkpoint (default: build one)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--position", type=int, default=250, help="frames already in the cache")
    parser.add_argument("--prompts", type=int, default=1, help="guided prompts (2 rows each)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-fp32", action="store_true")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--fp32-only", action="store_true", help="only the two float32 variants")
    parser.add_argument(
        "--busy", type=int, default=0, help="processes spinning beside the steps (busy cores)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder
        if folder is None:
            from tunesmith.testing.checkpoints import build_checkpoint

            print("building a random checkpoint at musicgen-small sizes...", file=sys.stderr)
            folder = str(build_checkpoint(Path(tmp) / "small", "small"))
        fp32 = MusicGen.from_pretrained(folder, device="cpu")
        text = fp32.condition(["lofi hip hop beat with soft piano"] * args.prompts).states
        variants: dict[str, Step] = {}
        if not args.fp32_only:
            int8 = MusicGen.from_pretrained(folder, device="cpu", quantize="int8")
            variants["int8, torch kernel"] = with_torch_int8(int8.model.decoder)
            variants["int8, our kernel, module by module"] = module_by_module(int8.model.decoder)
            variants["int8, the whole step in C++"] = int8.step
            if isinstance(int8.step, CpuKernelStep) and args.threads > 1:
                for n in (args.threads, 1):
                    fixed = dataclasses.replace(int8.step, chooser=FixedThreads(n))
                    variants[f"int8, the whole step in C++, {n} thread(s) fixed"] = fixed
        if not (args.no_compile or args.fp32_only):
            start = time.perf_counter()
            compiled = warm_up(TorchCompileStep(copy.deepcopy(int8.model.decoder)))
            print(f"compile warm-up: {time.perf_counter() - start:.1f} s", file=sys.stderr)
            variants["int8, our kernel, compiled"] = compiled
        if not args.no_fp32:
            variants["float32, torch F.linear"] = with_torch_fp32(fp32.model.decoder)
            variants["float32, our kernel, module by module"] = module_by_module(fp32.model.decoder)
            variants[FP32_STEP] = fp32.step

    rows = 2 * args.prompts
    reads = {name: bytes_per_step(step, args.position, rows) for name, step in variants.items()}
    runs: dict[str, list[float]] = {name: [] for name in variants}
    busy = spinners(args.busy)
    try:
        time.sleep(0.5 if busy else 0)
        for r in range(args.rounds):
            for name, step in variants.items():
                runs[name].append(step_ms(step, text, args.position, args.steps))
            print(
                f"round {r + 1}: " + ", ".join(f"{v[-1]:.1f}" for v in runs.values()),
                file=sys.stderr,
            )
    finally:
        for proc in busy:
            proc.kill()
    # After the rounds: a 1 GiB read, or a generation's threads, just before them would
    # move the steps' thread choice.
    bandwidth = read_bandwidth(args.threads)
    outside = None
    if not args.fp32_only and not args.busy and args.prompts == 1:  # a one-prompt generation
        outside = outside_ms(int8)

    print(
        f"\ndecoder step, {rows} rows, cache at {args.position} frames, {args.threads} threads, "
        f"{args.busy} busy core(s) beside it"
    )
    print(f"read bandwidth: {bandwidth / 1e9:.1f} GB/s (streaming sum of 1 GiB)")
    # torch's sum is not quite the machine's limit (the float32 C++ step, a streaming read
    # with a product, can pass it): the shares are of the faster of the two.
    fp32_step = runs.get(FP32_STEP)
    if fp32_step and not args.busy:
        streamed = reads[FP32_STEP] / (statistics.median(fp32_step) / 1e3)
        if streamed > bandwidth:
            bandwidth = streamed
            print(f"the float32 C++ step read faster, {bandwidth / 1e9:.1f} GB/s: shares of that")
    print("| variant | ms/step (median of rounds) | min | max | GB read | share of bandwidth |")
    print("|---|---|---|---|---|---|")
    for name, values in runs.items():
        med = statistics.median(values)
        share = reads[name] / (med / 1e3) / bandwidth
        print(
            f"| {name} | {med:.1f} | {min(values):.1f} | {max(values):.1f} "
            f"| {reads[name] / 1e9:.3f} | {share:.0%} |"
        )
    if outside is not None:
        print(
            f"int8 generation (CFG, top-k 250, progress): {outside[0]:.2f} ms a step outside "
            f"the decoder step, beside {outside[1]:.1f} ms in it"
        )
    choice = runs.get("int8, the whole step in C++")
    one = runs.get("int8, the whole step in C++, 1 thread(s) fixed")
    many = runs.get(f"int8, the whole step in C++, {args.threads} thread(s) fixed")
    if args.busy and choice and one and many:
        print(
            f"beside {args.busy} busy core(s), best round against best round: the measured "
            f"choice took {min(choice) / min(one):.2f}x the time of 1 fixed thread, "
            f"{args.threads} fixed threads {min(many) / min(one):.2f}x"
        )


if __name__ == "__main__":
    main()
