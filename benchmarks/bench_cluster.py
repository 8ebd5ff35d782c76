"""Batch throughput on Ray: rows per minute with 1 and 2 model replicas, beside one machine
without Ray, in one run (the same prompts, settings and seed for each).

    python benchmarks/bench_cluster.py                      # tiny checkpoint, 40 rows of 2 s
    python benchmarks/bench_cluster.py --size small --rows 4 --seconds 2 --quantize int8
    python benchmarks/bench_cluster.py --device cuda --size small --rows 64 --seconds 10

Each configuration runs `--repeats` times, alternating, each into a fresh output folder;
the table gives medians: wall time includes starting the replicas (each loads the model);
"busy" is a replica's rows per minute of its own working time. Ray is started locally for the Ray rows (as `tunesmith batch --ray`
does without RAY_ADDRESS); on a machine whose only network is loopback, run it inside
`unshare --net sh -c 'ip link set lo up && exec python benchmarks/bench_cluster.py'`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["tiny", "small"], default="tiny")
    parser.add_argument("--folder", help="an existing checkpoint folder (default: build one)")
    parser.add_argument("--rows", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=2.0, help="audio per row")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quantize", default=None)
    args = parser.parse_args()

    import ray

    from tunesmith import MusicGen
    from tunesmith.jobs.batch import JobOptions, run_batch
    from tunesmith.jobs.cluster import ClusterOptions, ModelSpec, run_on_ray
    from tunesmith.jobs.prompts_file import read_prompts
    from tunesmith.options import GenerationOptions

    cpus = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        folder = args.folder
        if folder is None:
            from tunesmith.testing.checkpoints import build_checkpoint

            print(f"building a random {args.size} checkpoint...", file=sys.stderr)
            folder = str(build_checkpoint(root / "ckpt", args.size))
        prompts = root / "p.txt"
        prompts.write_text("".join(f"a tune, number {i}\n" for i in range(args.rows)))
        rows = read_prompts(prompts, GenerationOptions(duration=args.seconds))
        job = JobOptions(batch_size=args.batch_size, seed=1, progress=False)
        spec = ModelSpec(folder, device=args.device, quantize=args.quantize)
        gpus = torch.cuda.device_count() if args.device != "cpu" else 0
        configs = {"one machine, no Ray": None}
        for replicas in (1, 2):
            if gpus and replicas > gpus:
                continue
            cpus_each = 1 if gpus else max(1, cpus // replicas)
            configs[f"Ray, {replicas} replica(s)"] = ClusterOptions(
                replicas=replicas, cpus_per_replica=cpus_each
            )
        local = MusicGen.from_pretrained(folder, device=args.device, quantize=args.quantize)
        ray.init(include_dashboard=False, configure_logging=False, log_to_driver=False)
        times: dict[str, list[float]] = {name: [] for name in configs}
        busy: dict[str, list[float]] = {name: [] for name in configs}  # rows/min a replica
        for r in range(args.repeats):
            for index, (name, cluster) in enumerate(configs.items()):
                out = root / f"out-{r}-{index}"
                start = time.perf_counter()
                if cluster is None:
                    run_batch(local, rows, out, job)
                else:
                    summary = run_on_ray(spec, rows, str(out), job, cluster)
                    assert len(summary.done) == args.rows, summary
                    busy[name] += [60 * s.rows / s.busy_seconds for s in summary.replicas.values()]
                times[name].append(time.perf_counter() - start)
                print(f"  {name}: {times[name][-1]:.1f} s", file=sys.stderr)
        ray.shutdown()

    device = torch.cuda.get_device_name() if gpus else f"CPU, {cpus} cores"
    print(
        f"\n{args.rows} rows of {args.seconds:g} s, {args.folder or args.size} checkpoint, "
        f"{args.quantize or 'float'} weights, batch size "
        f"{args.batch_size}, {device}; medians of {args.repeats} (replica load time included)"
    )
    print("| configuration | wall s | rows/min | audio s per wall s | rows/min per replica, busy |")
    print("|---|---|---|---|---|")
    for name, values in times.items():
        wall = statistics.median(values)
        rate = args.rows / wall * 60
        each = f"{statistics.median(busy[name]):.1f}" if busy[name] else "-"
        audio = args.rows * args.seconds / wall
        print(f"| {name} | {wall:.1f} | {rate:.1f} | {audio:.2f} | {each} |")


if __name__ == "__main__":
    main()
