"""Finishing against generation: tempo, key, stretch and loop of a 30 s clip, beside the time
to generate those 30 s on this CPU (musicgen-small sizes, random weights, int8), in one run.

    python benchmarks/bench_finishing.py                # 30 s, finishing timed 3 times
    python benchmarks/bench_finishing.py --seconds 10   # a quick look

Random weights make noise, which has no beat to stretch, so the finishing is timed on music
made with numpy at 100 BPM in G major (tunesmith.testing.signals), asked for 110 BPM in A major
(a stretch and a 2-semitone shift in one Rubber Band pass) and an 8-bar loop: every step runs.
The first finishing in a process also loads librosa and numba's compiled beat tracker; it is
reported on its own ("first"), the others as "warm".
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from tunesmith import MusicGen
    from tunesmith.finishing.options import FinishOptions
    from tunesmith.finishing.pipeline import finish
    from tunesmith.testing.checkpoints import build_checkpoint
    from tunesmith.testing.signals import RATE, song

    options = FinishOptions(bpm=110, key="A major", conform_key=True, loop=8)
    bars = int(args.seconds * 100 / 240)
    music = torch.from_numpy(song(100, 7, "major", bars))[None]
    times = []
    for _ in range(args.repeats + 1):
        start = time.perf_counter()
        done = finish(music, RATE, options)
        times.append(time.perf_counter() - start)
    print(f"finishing {music.shape[-1] / RATE:.1f} s of music: {'; '.join(done.report.notes)}")

    with tempfile.TemporaryDirectory() as tmp:
        folder = build_checkpoint(Path(tmp) / "small", "small")
        model = MusicGen.from_pretrained(folder, device="cpu", quantize="int8")
        model.generate("warm up", duration=1.0, seed=0)
        start = time.perf_counter()
        wav = model.generate("lofi beat", duration=args.seconds, seed=1)
        generation = time.perf_counter() - start
    start = time.perf_counter()
    noise = finish(wav[0], model.sample_rate, FinishOptions(bpm=110, key="A major", loop=8))
    on_noise = time.perf_counter() - start

    first, warm = times[0], statistics.median(times[1:])
    print(f"generation of {args.seconds:g} s (small, int8): {generation:.2f} s")
    print(
        f"finishing, first in the process: {first:.2f} s ({first / generation:.1%} of generation)"
    )
    print(f"finishing, warm (median of {args.repeats}): {warm:.2f} s ({warm / generation:.1%})")
    print(f"finishing the generated noise: {on_noise:.2f} s ({'; '.join(noise.report.notes)})")


if __name__ == "__main__":
    main()
