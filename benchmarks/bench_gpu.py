"""GPU generation speed: tunesmith (float16) vs transformers (float16).

    python benchmarks/bench_gpu.py                       # 10 s of audio, 1 and 16 prompts, CUDA
    python benchmarks/bench_gpu.py --device cpu --size tiny --seconds 1   # a smoke test, no GPU

tunesmith runs as `compile=True` (its decoder step compiled by inductor and replayed as a CUDA
graph), as CUDA graphs of the step as written (no compiler), and, with `--eager`, eager.

Random weights at the real musicgen-small sizes (tunesmith.testing, transformers' own
classes) stand in for the hub file: speed does not depend on their values. All three run in
one process on the same GPU, interleaved repeat by repeat after a full-length warm-up run
each (eager attention builds a plan per new key length the first time); times are
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
from typing import Any

import torch

from tunesmith.engine.cuda_graphs import CudaGraphStep

PROMPTS = [f"song number {i}: a lively tune with drums and bass" for i in range(64)]
Runner = Callable[[list[str], float], None]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def runners(
    folder: Path, device: torch.device, dtype: torch.dtype, eager: bool = False
) -> tuple[dict[str, Runner], dict[str, Any]]:
    """Each implementation's runner by name, and tunesmith's loaded models by name."""
    from transformers import MusicgenForConditionalGeneration

    from tunesmith import MusicGen
    from tunesmith.checkpoints.tokenizer import TextTokenizer

    reference = MusicgenForConditionalGeneration.from_pretrained(folder, dtype=dtype)
    reference = reference.to(device).eval()
    tokenizer = TextTokenizer.from_file(folder / "tokenizer.json")
    cuda = device.type == "cuda"
    compiled = MusicGen.from_pretrained(folder, device=device, dtype=dtype, compile=cuda)
    models = {"tunesmith-compiled": compiled}
    graphed = MusicGen.from_pretrained(folder, device=device, dtype=dtype)
    if cuda:  # the step as written, captured
        graphed.step = CudaGraphStep(graphed.model.decoder)
    models["tunesmith-graphs"] = graphed
    if eager:
        models["tunesmith"] = MusicGen.from_pretrained(folder, device=device, dtype=dtype)

    def run_reference(prompts: list[str], seconds: float) -> None:
        ids, mask = tokenizer(prompts)
        with torch.inference_mode():
            reference.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=True,
                top_k=250, guidance_scale=3.0, max_new_tokens=round(seconds * 50) + 3,
            )  # fmt: skip

    def ours(model: MusicGen) -> Runner:
        def run(prompts: list[str], seconds: float) -> None:
            model.generate(prompts, seconds, seed=0)

        return run

    runs = {"transformers": run_reference} | {name: ours(m) for name, m in models.items()}
    return runs, models


def breakdown(model: object, prompts: list[str], seconds: float, device: torch.device) -> str:
    """Where one tunesmith run's time goes: T5, the decoder steps, the codec (synchronized),
    and for CUDA graphs the replay alone (the GPU time of one captured step)."""
    from tunesmith import MusicGen

    assert isinstance(model, MusicGen)
    parts = []
    sync(device)
    start = time.perf_counter()
    model.condition(list(prompts))
    sync(device)
    parts.append(f"T5 {time.perf_counter() - start:.4f} s")
    start = time.perf_counter()
    codes = model.generate_tokens(prompts, seconds, seed=0)
    sync(device)
    took = time.perf_counter() - start
    steps = codes.shape[-1] + 3
    parts.append(f"decoder {took:.3f} s ({1000 * took / steps:.3f} ms/step)")
    start = time.perf_counter()
    model.decode(codes)
    sync(device)
    parts.append(f"codec {time.perf_counter() - start:.4f} s")
    step = model.step
    if isinstance(step, CudaGraphStep) and device.type == "cuda":
        from tunesmith.engine.cuda_graphs import StepGraph

        with torch.inference_mode():
            cache = step.new_cache(2 * len(prompts), steps, *_text(model, prompts))
            tokens = torch.zeros(2 * len(prompts), step.lm.cfg.num_codebooks, 1, dtype=torch.long)
            cache.length = steps // 2
            step(tokens.to(device), cache)
        graph = cache.step_state
        assert isinstance(graph, StepGraph)
        sync(device)
        start = time.perf_counter()
        for _ in range(200):
            graph.graph.replay()
        sync(device)
        parts.append(f"replay {1000 * (time.perf_counter() - start) / 200:.3f} ms")
    return ", ".join(parts)


def _text(model: object, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    text = model.condition(list(prompts))  # type: ignore[attr-defined]
    return text.states, text.mask


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
    parser.add_argument("--eager", action="store_true", help="also tunesmith without graphs")
    parser.add_argument("--breakdown", action="store_true", help="time tunesmith's parts too")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_gpu: no CUDA GPU here (try --device cpu --size tiny for a smoke test)")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.folder or Path(scratch) / "ckpt")
        if not args.folder:
            from tunesmith.testing.checkpoints import build_checkpoint

            print(f"building a random {args.size} checkpoint...", file=sys.stderr)
            build_checkpoint(folder, args.size, seed=0)
        start = time.perf_counter()
        run, models = runners(folder, device, dtype, args.eager)
        print(f"loaded in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        results: dict[tuple[str, int], list[float]] = {}
        for batch in args.batches:
            prompts = PROMPTS[:batch]
            for name, runner in run.items():  # warm-up: compile, capture, attention plans
                took = timed(runner, prompts, args.seconds, device)
                print(f"  {name} x{batch} warm-up: {took:.2f} s", file=sys.stderr)
            for _ in range(args.repeats):
                for name, runner in run.items():
                    took = timed(runner, prompts, args.seconds, device)
                    results.setdefault((name, batch), []).append(took)
                    print(f"  {name} x{batch}: {took:.2f} s", file=sys.stderr)
        if args.breakdown:
            for batch in args.batches:
                for name, model in models.items():
                    what = breakdown(model, PROMPTS[:batch], args.seconds, device)
                    print(f"{name} x{batch}: {what}")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"\n{args.seconds:g} s of audio on {name}, {dtype}".replace("torch.", ""))
    print("| implementation | prompts | seconds | RTF | vs transformers |")
    print("|---|---|---|---|---|")
    for (kind, batch), times in results.items():
        med, ref = statistics.median(times), statistics.median(results[("transformers", batch)])
        print(f"| {kind} | {batch} | {med:.3f} | {med / args.seconds:.3f} | {ref / med:.2f}x |")


if __name__ == "__main__":
    main()
