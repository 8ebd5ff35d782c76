"""A running batch's step at musicgen-small sizes: rows at mixed positions against one position.

    python benchmarks/bench_running_batch.py --folder /tmp/ts-small     # reuse a checkpoint folder
    python benchmarks/bench_running_batch.py --jobs 4 --position 400 --fp32

Variants, one guided step of `--jobs` jobs (2 rows each, texts of their own lengths), run in
alternation round by round so that a busy machine slows them alike (each cell the median over
rounds of each round's median step):
- "one position, decoder_step": every row at `--position` in one cache (the step a batch of
  settings-equal jobs ran before: texts padded to the longest, with a mask);
- "one position, decoder_rows": the running batch's step, every job at `--position` in its own
  place of a pool (each text attended over its own words);
- "mixed positions, decoder_rows": the jobs spread evenly over 0 .. 2 x `--position` (as many
  keys read as at one position);
- "one job": one job's 2 rows at `--position` (what a step for one costs).
Then a running batch of `--jobs` jobs as it runs (`RunningBatch.step`): its whole step against
the rows step inside it, the difference being each job's own draw (guidance, top-k, its
generator), the delay pattern and the bookkeeping. `--prefill`: a 301-frame prompt prefilled
in one piece against 16-frame chunks (what prefills cost for being exact in a running batch).
`--eager`: the same decoder module by module, all rows in one call at one position against a
running batch's rows (one call a job: what exactness costs where torch multiplies).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from tunesmith import MusicGen
from tunesmith.engine.running_batch import KVPool, RowBatch, RowGroup
from tunesmith.engine.step import PREFILL_CHUNK, EagerStep, Step
from tunesmith.generation.rows import BatchJob
from tunesmith.generation.scheduler import RunningBatch
from tunesmith.models.lm import LMCache
from tunesmith.options import GenerationOptions

PROMPTS = [
    "lofi hip hop beat with soft piano",
    "epic orchestral trailer music with brass",
    "calm acoustic guitar",
    "driving techno with a heavy kick and rolling bass line",
    "jazz trio",
    "slowly evolving ambient soundscape",
    "80s synthwave with arpeggios",
    "funk groove, slap bass, warm rhodes",
]


def fill(cache: LMCache, frames: int) -> None:
    """Give the first `frames` frames' keys and values pages of their own: an untouched
    (zero-page) cache reads as fast as the caches, not from memory."""
    for layer in cache.layers:
        for part in (layer.self_k, layer.self_v, layer.self_k_scale, layer.self_v_scale):
            if part is None:
                continue
            if part.dtype == torch.int8:
                part[:, :, :frames].random_(-127, 128)
            else:
                part[:, :, :frames].normal_()


def timed(call, steps: int) -> float:
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def variants(model: MusicGen, step: Step, jobs: int, position: int, tag: str = "") -> dict:
    """Each variant's one step of `step`, as a call that leaves its cache as it found it."""
    lm = step.lm
    k = lm.cfg.num_codebooks
    texts = [model.condition([PROMPTS[i % len(PROMPTS)]]) for i in range(jobs)]
    padded = model.condition([PROMPTS[i % len(PROMPTS)] for i in range(jobs)])
    frames = 2 * position + 2
    cache = step.new_cache(2 * jobs, frames, padded.states, padded.mask)
    fill(cache, frames)
    one = step.new_cache(2, frames, texts[0].states, texts[0].mask)
    fill(one, frames)
    pool: KVPool = step.new_pool(jobs, frames)
    fill(pool.cache, frames)
    dtype = pool.layout.text_dtype(next(lm.parameters()).dtype)
    for place, text in enumerate(texts):
        pool.set_text(place, lm.text_keys(text.states, text.mask, dtype)[0])
    tokens = torch.randint(0, lm.cfg.vocab_size, (2 * jobs, k, 1))
    same = RowBatch(tuple(RowGroup(j, 2, position) for j in range(jobs)))
    spread = [round(2 * position * (j + 0.5) / jobs) for j in range(jobs)]
    mixed = RowBatch(tuple(RowGroup(j, 2, p) for j, p in enumerate(spread)))

    def at(c: LMCache, t: torch.Tensor) -> None:
        c.length = position
        step(t, c)

    if tag:  # module by module
        return {
            f"{tag}, one position, one call": lambda: at(cache, tokens),
            f"{tag}, mixed positions, a call a job": lambda: step.rows(tokens, pool, mixed),
        }
    return {
        "one position, decoder_step": lambda: at(cache, tokens),
        "one position, decoder_rows": lambda: step.rows(tokens, pool, same),
        "mixed positions, decoder_rows": lambda: step.rows(tokens, pool, mixed),
        "one job (2 rows)": lambda: at(one, tokens[:2]),
    }


def running(model: MusicGen, jobs: int, steps: int) -> tuple[float, float]:
    """Median ms of a running batch's whole step and of the rows step inside it, `jobs` jobs
    of other settings, each with its own seed."""
    batch = RunningBatch(model, max_batch=jobs)
    for j in range(jobs):
        opts = GenerationOptions(duration=30.0, seed=j, top_k=250 - 20 * j, cfg_scale=3.0 + j)
        batch.submit(BatchJob(PROMPTS[j % len(PROMPTS)], opts))
    inner: list[float] = []
    rows = batch.step_runner.rows

    def timed_rows(*args: object) -> torch.Tensor:
        start = time.perf_counter()
        out = rows(*args)  # type: ignore[arg-type]
        inner.append(time.perf_counter() - start)
        return out

    batch.step_runner.rows = timed_rows  # type: ignore[method-assign]
    for _ in range(jobs + 2):  # everyone joined
        batch.step()
    inner.clear()
    whole = timed(batch.step, steps)
    del batch.step_runner.rows
    return whole, 1e3 * statistics.median(inner[-steps:])


def prefill_seconds(model: MusicGen, rounds: int, frames: int = 301) -> dict[int, list[float]]:
    """Seconds to prefill `frames` frames of a guided prompt in one piece and in chunks of
    16, 32 and 64 frames, alternating, `rounds` times each: {chunk: [seconds...]}."""
    step, lm = model.step, model.step.lm
    text = model.condition(["lofi beat"])
    tokens = torch.randint(0, lm.cfg.vocab_size, (2, lm.cfg.num_codebooks, frames))
    took: dict[int, list[float]] = {frames: [], 16: [], 32: [], 64: []}
    for _ in range(rounds):
        for chunk, times in took.items():
            cache = step.new_cache(2, frames + 1, text.states, text.mask)
            start = time.perf_counter()
            for t in range(0, frames, chunk):
                lm(tokens[:, :, t : t + chunk], cache)
            times.append(time.perf_counter() - start)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", help="a musicgen-small-sized checkpoint (default: build one)")
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--position", type=int, default=250)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--fp32", action="store_true", help="float32 weights (default int8)")
    parser.add_argument("--prefill", action="store_true", help="also time a chunked prefill")
    parser.add_argument("--eager", action="store_true", help="also module by module")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder
        if folder is None:
            from tunesmith.testing.checkpoints import build_checkpoint

            print("building a random checkpoint at musicgen-small sizes...", file=sys.stderr)
            folder = str(build_checkpoint(Path(tmp) / "small", "small"))
        quantize = None if args.fp32 else "int8"
        model = MusicGen.from_pretrained(folder, device="cpu", quantize=quantize)
    with torch.inference_mode():
        calls = variants(model, model.step, args.jobs, args.position)
        if args.eager:
            eager = EagerStep(model.step.lm)  # the same weights, module by module
            calls |= variants(model, eager, args.jobs, args.position, "module by module")
        runs: dict[str, list[float]] = {name: [] for name in calls}
        runs["running batch, whole step"], runs["running batch, its rows step"] = [], []
        for r in range(args.rounds):
            for name, call in calls.items():
                runs[name].append(timed(call, args.steps))
            whole, inner = running(model, args.jobs, args.steps)
            runs["running batch, whole step"].append(whole)
            runs["running batch, its rows step"].append(inner)
            cells = ", ".join(f"{v[-1]:.1f}" for v in runs.values())
            print(f"round {r + 1}: {cells}", file=sys.stderr)
        prefill = prefill_seconds(model, args.rounds) if args.prefill else None

    weights = "float32" if args.fp32 else "int8"
    print(
        f"\n{weights}, {args.jobs} guided jobs ({2 * args.jobs} rows), cache at {args.position} "
        f"frames (mixed: 0 .. {2 * args.position}), {torch.get_num_threads()} threads, "
        f"median of {args.rounds} rounds of {args.steps} steps"
    )
    # Each round's ratio to that round's one-position step: a busy machine moves both alike.
    base = runs["one position, decoder_step"]
    print("| variant | ms/step | min | max | / one position, decoder_step: median (range) |")
    print("|---|---|---|---|---|")
    for name, values in runs.items():
        ratios = [v / b for v, b in zip(values, base, strict=True)]
        print(
            f"| {name} | {statistics.median(values):.1f} | {min(values):.1f} | "
            f"{max(values):.1f} | {statistics.median(ratios):.2f} "
            f"({min(ratios):.2f}-{max(ratios):.2f}) |"
        )
    if prefill is not None:
        whole = prefill.pop(301)
        print(f"\nprefill of 301 frames (2 rows), median of {args.rounds} rounds")
        print("| chunk | seconds | / one piece: median (range) |")
        print("|---|---|---|")
        print(f"| one piece | {statistics.median(whole):.2f} | 1.00 |")
        for chunk, times in prefill.items():
            ratios = [c / w for c, w in zip(times, whole, strict=True)]
            used = " (PREFILL_CHUNK)" if chunk == PREFILL_CHUNK else ""
            print(
                f"| {chunk}{used} | {statistics.median(times):.2f} | "
                f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) |"
            )


if __name__ == "__main__":
    main()
