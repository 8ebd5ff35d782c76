"""End-to-end generation speed: tunesmith vs transformers, same random weights, one run.

    python benchmarks/bench_cpu.py                 # 10 s of audio, 2 repeats, + an 8-prompt batch
    python benchmarks/bench_cpu.py --seconds 2 --repeats 1 --no-batch   # a quick look
    python benchmarks/bench_cpu.py --baseline /tmp/old  # beside another checkout's int8
    python benchmarks/bench_cpu.py --size medium --only tunesmith-int8 --no-batch

Speed does not depend on the weights' values, so a random checkpoint at the real
musicgen-small sizes (tunesmith.testing, transformers' own classes) stands in for the hub
file. Each implementation runs in its own worker process (so peak RSS is its own), loaded
once; the parent interleaves their runs. Model loading is excluded from the timings; peak
RSS is measured from the end of loading (the kernel's high-water mark reset via
/proc/self/clear_refs) to the end of the run, so it includes the resident weights.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPTS = [
    "lofi hip hop beat with soft piano",
    "epic orchestral music with strings and brass",
    "fast jazz drums with walking bass",
    "dreamy synth pads over a slow beat",
    "calm acoustic guitar melody",
    "80s synthwave with arpeggios",
    "heavy metal riff with double kick",
    "reggae groove with offbeat organ",
]
# No compiled variant: on a CPU tunesmith's steps run as one C++ call (tunesmith.engine.cpu_step),
# which `compile=True` leaves as it is.
IMPLEMENTATIONS = ["transformers", "tunesmith", "tunesmith-int8"]
BASELINE = "baseline-int8"  # --baseline: another checkout's tunesmith, int8, in the same run


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def worker(kind: str, folder: str, threads: int) -> None:
    """Load once, then answer `run SECONDS BATCH` lines with one JSON line of timings."""
    import torch

    torch.set_num_threads(threads)
    if kind == "transformers":
        from transformers import MusicgenForConditionalGeneration

        from tunesmith.checkpoints.tokenizer import TextTokenizer

        model = MusicgenForConditionalGeneration.from_pretrained(folder).eval()
        tokenizer = TextTokenizer.from_file(Path(folder) / "tokenizer.json")
    else:
        import tunesmith
        from tunesmith import MusicGen

        baseline = os.environ.get("TUNESMITH_BASELINE")
        if kind == BASELINE and not (baseline and tunesmith.__file__.startswith(baseline)):
            raise SystemExit(f"the baseline worker imported {tunesmith.__file__}")
        ours = MusicGen.from_pretrained(
            folder, device="cpu", quantize="int8" if "int8" in kind else None
        )
    print("ready", flush=True)
    for line in sys.stdin:
        _, seconds_s, batch_s = line.split()
        seconds, batch = float(seconds_s), int(batch_s)
        prompts = PROMPTS[:batch]
        frames = round(seconds * 50)
        reset_peak()
        with torch.inference_mode():
            start = time.perf_counter()
            if kind == "transformers":
                ids, mask = tokenizer(prompts)
                t0 = time.perf_counter()
                model.text_encoder(input_ids=ids, attention_mask=mask)
                t5 = time.perf_counter() - t0
                codes: dict = {}
                decode = model.audio_encoder.decode

                def spy(c, *a, codes=codes, decode=decode, **k):
                    codes["c"] = c
                    t = time.perf_counter()
                    out = decode(c, *a, **k)
                    codes["t"] = time.perf_counter() - t
                    return out

                model.audio_encoder.decode = spy
                g0 = time.perf_counter()
                model.generate(
                    input_ids=ids, attention_mask=mask, do_sample=True, top_k=250,
                    guidance_scale=3.0, max_new_tokens=frames + 3,
                )  # fmt: skip
                total_gen = time.perf_counter() - g0
                model.audio_encoder.decode = decode
                codec = codes["t"]
                lm = total_gen - codec  # generate re-runs T5 inside: counted in `lm` too
            else:
                t0 = time.perf_counter()
                ours.condition(prompts)
                t5 = time.perf_counter() - t0
                g0 = time.perf_counter()
                codes_t = ours.generate_tokens(prompts, seconds, seed=0)
                lm = time.perf_counter() - g0
                c0 = time.perf_counter()
                ours.decode(codes_t)
                codec = time.perf_counter() - c0
            total = time.perf_counter() - start
        result = dict(total=total, t5=t5, lm=lm, codec=codec, rss_mb=peak_rss_mb())
        print(json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--no-batch", action="store_true", help="skip the 8-prompt batch row")
    parser.add_argument("--only", nargs="*", default=IMPLEMENTATIONS, choices=IMPLEMENTATIONS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help="an existing checkpoint folder (default: build one)")
    parser.add_argument("--size", default="small", choices=["small", "medium"])
    parser.add_argument(
        "--baseline", help="a checkout of another commit: its tunesmith int8 runs beside ours"
    )
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.folder, args.threads)
        return

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder
        if folder is None:
            from tunesmith.testing.checkpoints import build_checkpoint

            print(f"building a random checkpoint at musicgen-{args.size} sizes...", file=sys.stderr)
            folder = str(build_checkpoint(Path(tmp) / args.size, args.size))
        kinds = [*args.only, *([BASELINE] if args.baseline else [])]
        envs = {kind: dict(os.environ) for kind in kinds}
        if args.baseline:
            src = str(Path(args.baseline).resolve() / "src")
            envs[BASELINE].update(PYTHONPATH=src, TUNESMITH_BASELINE=src)
        workers = {
            kind: subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    kind,
                    "--folder",
                    folder,
                    "--threads",
                    str(args.threads),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=envs[kind],
            )
            for kind in kinds
        }
        for proc in workers.values():
            assert proc.stdout is not None
            while proc.stdout.readline().strip() != "ready":
                pass
        rows = [(1, args.repeats)] + ([] if args.no_batch else [(8, 1)])
        results: dict[tuple[str, int], list[dict]] = {}
        for batch, repeats in rows:
            for _ in range(repeats):  # interleaved: each repeat runs every implementation once
                for kind, proc in workers.items():
                    assert proc.stdin is not None and proc.stdout is not None
                    proc.stdin.write(f"run {args.seconds} {batch}\n")
                    proc.stdin.flush()
                    results.setdefault((kind, batch), []).append(json.loads(proc.stdout.readline()))
                    print(f"  {kind} batch {batch}: {results[(kind, batch)][-1]}", file=sys.stderr)
        for proc in workers.values():
            proc.terminate()
    print_table(results, args)


def print_table(results: dict[tuple[str, int], list[dict]], args: argparse.Namespace) -> None:
    import platform

    print(
        f"\n{args.seconds:g} s of audio, {args.threads} threads, {platform.processor() or platform.machine()}"
    )
    head = (
        "| implementation | prompts | total s | RTF | vs transformers | time vs baseline int8 "
        "| T5 s | decoder s | codec s | peak RSS MB |"
    )
    print(head)
    print("|" + "---|" * 10)

    def total(kind: str, batch: int) -> float | None:
        runs = results.get((kind, batch))
        return statistics.median(r["total"] for r in runs) if runs else None

    for (kind, batch), runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        ref, base = total("transformers", batch), total(BASELINE, batch)
        ratio = f"{ref / med['total']:.2f}x faster" if ref else "-"
        against = f"{med['total'] / base:.2f}x" if base else "-"
        print(
            f"| {kind} | {batch} | {med['total']:.2f} | {med['total'] / args.seconds:.2f} | "
            f"{ratio} | {against} | {med['t5']:.3f} | {med['lm']:.2f} | {med['codec']:.2f} | "
            f"{med['rss_mb']:.0f} |"
        )


if __name__ == "__main__":
    main()
