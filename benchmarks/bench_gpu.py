"""GPU generation speed: tunesmith (float16, eager and CUDA graphs) vs transformers (float16).

    python benchmarks/bench_gpu.py                       # 10 s of audio, 1 and 16 prompts, CUDA
    python benchmarks/bench_gpu.py --device cpu --size tiny --seconds 1   # a smoke test, no GPU

Random weights at the real musicgen-small sizes (tunesmith.testing, transformers' own
classes) stand in for the hub file: speed does not depend on their values. All three run in
one process on the same GPU, interleaved repeat by repeat after a warm-up run each; times are
prompt to waveform (model loading excluded), synchronized with the device. The table gives
medians, the real-time factor and the ratio to transformers.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

PROMPTS = [f"song number {i}: a lively tune with drums and bass" for i in range(64)]
Runner = Callable[[list[str], float], None]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def runners(folder: Path, device: torch.device, dtype: torch.dtype) -> dict[str, Runner]:
    from transformers import MusicgenForConditionalGeneration

    from tunesmith import MusicGen
    from tunesmith.tokenizer import TextTokenizer

    reference = MusicgenForConditionalGeneration.from_pretrained(folder, dtype=dtype)
    reference = reference.to(device).eval()
    tokenizer = TextTokenizer.from_file(folder / "tokenizer.json")
    eager = MusicGen.from_pretrained(folder, device=device, dtype=dtype)
    graphed = MusicGen.from_pretrained(folder, device=device, dtype=dtype, compile=True)

    def run_reference(prompts: list[str], seconds: float) -> None:
        ids, mask = tokenizer(prompts)
        with torch.inference_mode():
            reference.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=True,
                top_k=250, guidance_scale=3.0, max_new_tokens=round(seconds * 50) + 3,
            )  # fmt: skip

    def run_eager(prompts: list[str], seconds: float) -> None:
        eager.generate(prompts, seconds, seed=0)

    def run_graphed(prompts: list[str], seconds: float) -> None:
        graphed.generate(prompts, seconds, seed=0)

    return {"transformers": run_reference, "tunesmith": run_eager, "tunesmith-graphs": run_graphed}


def timed(run: Runner, prompts: list[str], seconds: float, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    run(prompts, seconds)
    sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", default="small", choices=["small", "tiny"])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folder", help="an existing checkpoint folder (default: build one)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_gpu: no CUDA GPU here (try --device cpu --size tiny for a smoke test)")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.folder or Path(scratch) / "ckpt")
        if not args.folder:
            from tunesmith.testing import build_checkpoint

            print(f"building a random {args.size} checkpoint...", file=sys.stderr)
            build_checkpoint(folder, args.size, seed=0)
        run = runners(folder, device, dtype)
        results: dict[tuple[str, int], list[float]] = {}
        for batch in args.batches:
            prompts = PROMPTS[:batch]
            for runner in run.values():  # warm-up: allocator, cuBLAS, graph capture
                timed(runner, prompts, min(args.seconds, 1.0), device)
            for _ in range(args.repeats):
                for name, runner in run.items():
                    took = timed(runner, prompts, args.seconds, device)
                    results.setdefault((name, batch), []).append(took)
                    print(f"  {name} x{batch}: {took:.2f} s", file=sys.stderr)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"\n{args.seconds:g} s of audio on {name}, {dtype}".replace("torch.", ""))
    print("| implementation | prompts | seconds | RTF | vs transformers |")
    print("|---|---|---|---|---|")
    for (kind, batch), times in results.items():
        med, ref = statistics.median(times), statistics.median(results[("transformers", batch)])
        print(f"| {kind} | {batch} | {med:.3f} | {med / args.seconds:.3f} | {ref / med:.2f}x |")


if __name__ == "__main__":
    main()
