"""What a transition costs: decoder steps with the previous text's rows in the batch (three
blocks of rows instead of two, the blend and the draw in Python) beside plain steps, and a
two-section piece with a transition beside the same piece without one.

    python benchmarks/bench_transition.py                  # musicgen-small sizes, int8 and float32
    python benchmarks/bench_transition.py --quantize int8 --repeats 5

Random weights at the real musicgen-small sizes (speed does not depend on their values), as
bench_cpu.py builds them. The two kinds of each pair advance one decoder step each in turn,
so that a busy machine slows both alike; the table gives the median step (the first,
prefilling the prompt, left out) and the pieces' totals. Loading is not timed.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from tunesmith import MusicGen, Section
from tunesmith.generation.loop import iter_window
from tunesmith.generation.transition import Transition
from tunesmith.options import GenerationOptions

PREVIOUS, NEW = "soft piano intro, slow and quiet", "drums enter, full band, driving rhythm"


def alternate(streams: list[Iterator[object]]) -> list[list[float]]:
    """Advance the streams one step each in turn, timing every step, until all are done:
    a busy machine then slows each of them alike."""
    times: list[list[float]] = [[] for _ in streams]
    live = list(range(len(streams)))
    while live:
        for i in list(live):
            start = time.perf_counter()
            try:
                next(streams[i])
            except StopIteration:
                live.remove(i)
                continue
            times[i].append(time.perf_counter() - start)
    return times


def window(model: MusicGen, prompt: int, frames: int, blended: bool) -> Iterator[object]:
    """One window of `frames` new frames after `prompt` frames, every step blended (a span
    longer than the window) or none; sampled with the default settings (top_k 250, cfg 3)."""
    previous, new = model.condition([PREVIOUS]), model.condition([NEW])
    codes = torch.randint(0, 2048, (1, model.num_codebooks, prompt))
    span = Transition(previous, 3.0, frames=10**6) if blended else None
    return iter_window(
        model.step, new, prompt + frames, GenerationOptions(seed=1),
        torch.Generator().manual_seed(1), prompt=codes, transition=span,
    )  # fmt: skip


def piece(model: MusicGen, seconds: float, transition: float) -> Iterator[object]:
    """Two sections of `seconds` each, the second blending in over `transition`."""
    sections = [Section(PREVIOUS, seconds), Section(NEW, seconds, transition=transition)]
    return iter(model.compose_token_stream(sections, seed=1))


def measure(model: MusicGen, args: argparse.Namespace) -> dict[str, float]:
    """Median seconds of a window's first step (the prompt's prefill) and milliseconds of a
    later step, plain and blended, and seconds for the whole piece with and without its
    transition, each pair run step by step in turn."""
    frames, prompt = model.frames_for(args.window), model.frames_for(args.prompt)
    alternate([window(model, 5, 10, False), window(model, 5, 10, True)])  # warm-up
    steps: list[list[float]] = [[], []]
    prefills: list[list[float]] = [[], []]
    for _ in range(args.repeats):
        pair = [window(model, prompt, frames, blended) for blended in (False, True)]
        for kind, times in enumerate(alternate(pair)):
            prefills[kind].append(times[0])
            steps[kind] += times[1:]
    pieces = [piece(model, args.section, t) for t in (0.0, args.transition)]
    whole = [sum(times) for times in alternate(pieces)]
    print(
        f"  {len(steps[0])} steps of each kind, two pieces of {len(pieces)} sections",
        file=sys.stderr,
    )
    return {
        "prefill": statistics.median(prefills[0]),
        "blended prefill": statistics.median(prefills[1]),
        "plain": 1e3 * statistics.median(steps[0]),
        "blended": 1e3 * statistics.median(steps[1]),
        "piece": whole[0],
        "piece + transition": whole[1],
    }


def machine() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    names = [line.split(":", 1)[1].strip() for line in out.splitlines() if "Model name" in line]
    return names[0] if names else "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quantize", nargs="*", default=["int8", "none"], choices=["int8", "none"])
    parser.add_argument("--window", type=float, default=3.0, help="seconds of steps timed")
    parser.add_argument(
        "--prompt", type=float, default=12.0, help="seconds prefilled first (a section's context)"
    )
    parser.add_argument("--section", type=float, default=6.0, help="each section's seconds")
    parser.add_argument("--transition", type=float, default=3.0, help="the second's blend")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folder", help="an existing checkpoint folder (default: build one)")
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder
        if folder is None:
            from tunesmith.testing.checkpoints import build_checkpoint

            print("building a random checkpoint at musicgen-small sizes...", file=sys.stderr)
            folder = str(build_checkpoint(Path(tmp) / "small", "small"))
        for mode in args.quantize:
            quantize = None if mode == "none" else mode
            model = MusicGen.from_pretrained(folder, device="cpu", quantize=quantize)
            rows[mode] = measure(model, args)
    print(f"\n{machine()}, {torch.get_num_threads()} threads, {time.strftime('%Y-%m-%d')}")
    print(
        f"{'weights':8} {'prefill':>8} {'blended':>8} {'ratio':>6}   {'step':>8} "
        f"{'blended':>9} {'ratio':>6}   {'piece':>7} {'+transition':>12} {'ratio':>6}"
    )
    for mode, m in rows.items():
        fill, fill_b, plain, blended = (
            m[k] for k in ("prefill", "blended prefill", "plain", "blended")
        )
        whole, with_t = m["piece"], m["piece + transition"]
        print(
            f"{mode:8} {fill:>6.2f} s {fill_b:>6.2f} s {fill_b / fill:>6.2f}   "
            f"{plain:>5.1f} ms {blended:>6.1f} ms {blended / plain:>6.2f}   "
            f"{whole:>5.1f} s {with_t:>10.1f} s {with_t / whole:>6.2f}"
        )
    print(
        f"(medians over {args.repeats} pairs of windows: a {args.prompt:g} s prompt's prefill, "
        f"then {args.window:g} s of steps, every step blended or none; piece: 2 x "
        f"{args.section:g} s, the second with a {args.transition:g} s transition or none; each "
        "pair run step by step in turn)"
    )


if __name__ == "__main__":
    main()
