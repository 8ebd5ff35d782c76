"""Peak memory of a composed piece beside a plain long form of the same length, each made
by the CLI in a process of its own (peak RSS of that process, its children left out).

    python benchmarks/compose_memory.py --folder /tmp/ts-small --quantize int8   # 90 s each
    python benchmarks/compose_memory.py --seconds 30 60 30                        # 3 sections

Without --folder, a random checkpoint at musicgen-small sizes is built (as bench_cpu.py
does). The piece has one section per --seconds value, the second and later with a
--transition; the long form has the pieces' total length. Both are written as FLOAT WAV
without levelling, with the same settings and seed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MEASURED = (
    "import resource, sys\n"
    "from tunesmith.cli.main import main\n"
    "code = main(sys.argv[1:])\n"
    "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
    "print(f'peak-rss-kib {peak}', file=sys.stderr)\n"
    "sys.exit(code)\n"
)
TEXTS = ["soft piano intro", "drums enter, full band", "outro, piano alone", "a slow coda"]


def run(*argv: str) -> tuple[float, float]:
    """Peak RSS (MiB) and wall seconds of one CLI run in its own process."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", MEASURED, *argv], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    line = [x for x in done.stderr.splitlines() if x.startswith("peak-rss-kib")][-1]
    return int(line.split()[1]) / 1024, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", help="an existing checkpoint folder (default: build one)")
    parser.add_argument("--seconds", type=float, nargs="+", default=[20.0, 40.0, 30.0])
    parser.add_argument("--transition", type=float, default=4.0)
    parser.add_argument("--quantize", choices=["int8"], default=None)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder
        if folder is None:
            from tunesmith.testing.checkpoints import build_checkpoint

            print("building a random checkpoint at musicgen-small sizes...", file=sys.stderr)
            folder = str(build_checkpoint(Path(tmp) / "small", "small"))
        common = ["--model", folder, "--seed", "1", "--normalize", "none"]
        common += ["--wav-subtype", "FLOAT", "--device", "cpu"]
        common += ["--quantize", args.quantize] if args.quantize else []
        sections = []
        for i, seconds in enumerate(args.seconds):
            sections += ["--section", f"{seconds:g}: {TEXTS[i % len(TEXTS)]}"]
        total = sum(args.seconds)
        piece = ["compose", *sections, "--transition", str(args.transition)]
        long_form = ["generate", TEXTS[0], "--duration", str(total)]
        results: dict[str, list[tuple[float, float]]] = {"piece": [], "long form": []}
        for _ in range(args.rounds):
            results["piece"].append(run(*piece, "-o", f"{tmp}/piece.wav", *common))
            results["long form"].append(run(*long_form, "-o", f"{tmp}/long.wav", *common))
            for name, got in results.items():
                print(f"  {name}: {got[-1][0]:.1f} MiB, {got[-1][1]:.1f} s", file=sys.stderr)
    print(
        f"\n{len(args.seconds)} sections, {total:g} s, quantize {args.quantize}, rounds {args.rounds}"
    )
    for name, got in results.items():
        peaks = ", ".join(f"{p:.1f}" for p, _ in got)
        print(f"{name:10} peak RSS {peaks} MiB; {max(t for _, t in got):.0f} s at most")


if __name__ == "__main__":
    main()
