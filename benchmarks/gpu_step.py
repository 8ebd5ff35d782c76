"""Where a CUDA-graph decoder step's time goes, at musicgen-small sizes (random weights).

    python benchmarks/gpu_step.py                  # 1 prompt (2 rows with guidance), 10 s
    python benchmarks/gpu_step.py --batch 16 --folder /tmp/ck

Prints, for the fixed-shape step as written (`static_step`) and compiled by inductor
(`compile=True`): the GPU time of one replayed step at a mid-window position, the time per
step of the whole sampling loop (`generate_tokens`), and the kernels of one step
(torch.profiler over the step outside a graph), by total GPU time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from tunesmith import MusicGen
from tunesmith.engine.cuda_graphs import CudaGraphStep, StepGraph


def replay_ms(model: MusicGen, rows: int, frames: int) -> float:
    """GPU ms of one replayed step at position frames // 2."""
    step = model.step
    text = model.condition(["a lively tune"] * (rows // 2))
    cache = step.new_cache(rows, frames, text.states, text.mask)
    cache.length = frames // 2
    tokens = torch.zeros(rows, step.lm.cfg.num_codebooks, 1, dtype=torch.long, device=model.device)
    step(tokens, cache)
    graph = cache.step_state
    assert isinstance(graph, StepGraph)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(200):
        graph.graph.replay()
    torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - start) / 200


def loop_ms(model: MusicGen, prompts: list[str], seconds: float) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    codes = model.generate_tokens(prompts, seconds, seed=0)
    torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - start) / (codes.shape[-1] + 3)


def kernel_table(model: MusicGen, rows: int, frames: int) -> str:
    from torch.profiler import ProfilerActivity, profile

    graphs = model.step
    assert isinstance(graphs, CudaGraphStep)
    lm = graphs.lm
    text = model.condition(["a lively tune"] * (rows // 2))
    cache = graphs.new_cache(rows, frames, text.states, text.mask)
    step = graphs.static or lm.static_step
    tokens = torch.zeros(rows, lm.cfg.num_codebooks, 1, dtype=torch.long, device=model.device)
    position = torch.tensor([frames // 2], device=model.device)
    lm.prepare_static(cache)
    step(tokens, position, cache)  # warm-up
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            step(tokens, position, cache)
        torch.cuda.synchronize()
    events = [e for e in prof.events() if e.device_type.name == "CUDA"]
    lines = [
        f"{len(events) / 5:.0f} kernels per step, {sum(e.device_time for e in events) / 5:.0f} us of GPU time"
    ]
    lines.append(prof.key_averages().table(sort_by="cuda_time_total", row_limit=22))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--folder", help="an existing checkpoint folder (default: build one)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_step: no CUDA GPU here")
    with tempfile.TemporaryDirectory() as scratch, torch.inference_mode():
        folder = Path(args.folder or Path(scratch) / "ckpt")
        if not args.folder:
            from tunesmith.testing.checkpoints import build_checkpoint

            build_checkpoint(folder, "small", seed=0)
        plain = MusicGen.from_pretrained(folder, device="cuda")
        plain.step = CudaGraphStep(plain.model.decoder)  # graphs of the step as written
        models = {"as written": plain}
        models["compiled"] = MusicGen.from_pretrained(folder, device="cuda", compile=True)
        rows, frames = 2 * args.batch, round(args.seconds * 50) + 4
        prompts = [f"song {i}" for i in range(args.batch)]
        print(f"{torch.cuda.get_device_name()}, {rows} rows, {frames} frames, float16")
        for name, model in models.items():
            start = time.perf_counter()
            loop_ms(model, prompts, 1.0)  # warm-up (and inductor's compile)
            print(f"{name}: first run {time.perf_counter() - start:.1f} s")
            print(f"{name}: replayed step {replay_ms(model, rows, frames):.3f} ms")
            print(f"{name}: sampling loop {loop_ms(model, prompts, args.seconds):.3f} ms/step")
        for name, model in models.items():
            print(f"{name}: {kernel_table(model, rows, frames)}")


if __name__ == "__main__":
    main()
