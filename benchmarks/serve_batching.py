"""Server throughput: N queued jobs run one at a time (max_batch=1) vs batched by the worker.

    python benchmarks/serve_batching.py                          # tiny random checkpoint, CPU
    python benchmarks/serve_batching.py --size small --jobs 8 --duration 2   # real sizes, random
    python benchmarks/serve_batching.py --model facebook/musicgen-small --device cuda --duration 10

The N jobs (same settings, different prompts, no seed) are queued while the worker is paused
and released together, so both runs start from the same full queue; the wall time runs from
the release until the worker is idle (watched without HTTP polling, which would compete
with the worker for the GIL). Requests go through the real app in-process (FastAPI's
TestClient), so the figures include all the server does per job: SQLite, chunked decoding,
audio files. A warm-up job runs first in each app. Random weights stand in for the hub file
(speed does not depend on their values); `--size small` needs the test extras (transformers).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

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


def load(args: argparse.Namespace, scratch: Path) -> Any:
    from tunesmith import MusicGen

    if args.model:
        return MusicGen.from_pretrained(args.model, device=args.device)
    from tunesmith.testing.checkpoints import build_checkpoint

    folder = Path(args.checkpoint_dir or scratch / f"ckpt-{args.size}")
    if not (folder / "model.safetensors").is_file():
        print(f"building a random {args.size} checkpoint in {folder} ...", flush=True)
        build_checkpoint(folder, args.size, seed=0)
    return MusicGen.from_pretrained(folder, device=args.device)


def run(model: Any, data_dir: Path, max_batch: int, args: argparse.Namespace) -> dict[str, Any]:
    """Queue `args.jobs` jobs behind a paused worker, release them, time until all are done."""
    from fastapi.testclient import TestClient

    from tunesmith.server import create_app

    app = create_app(model, data_dir, max_queue=max(16, args.jobs), max_batch=max_batch)
    body = {"duration": args.duration, "top_k": 250, "cfg_scale": 3.0}
    with TestClient(app, base_url="http://127.0.0.1") as client:  # a loopback Host (421 else)
        worker = app.state.tunesmith.worker
        wait(client, [submit(client, {**body, "prompt": "warm-up"})])
        worker.pause()
        ids = [
            submit(client, {**body, "prompt": PROMPTS[i % len(PROMPTS)]}) for i in range(args.jobs)
        ]
        start = time.perf_counter()
        worker.resume()
        while worker.counts() != (0, 0):  # cheap: no HTTP polling competing for the GIL
            time.sleep(0.005)
        wall = time.perf_counter() - start
        jobs = wait(client, ids)
    assert all(j["status"] == "done" for j in jobs), [j["error"] for j in jobs]
    waits = [j["timings"]["wait_seconds"] + j["timings"]["run_seconds"] for j in jobs]
    return {
        "max_batch": max_batch,
        "batches": sorted({j["batch_size"] for j in jobs}, reverse=True),
        "wall": wall,
        "jobs_per_s": args.jobs / wall,
        "audio_per_s": args.jobs * args.duration / wall,
        "mean_latency": statistics.mean(waits),
    }


def submit(client: Any, body: dict[str, Any]) -> str:
    response = client.post("/v1/generations", json=body)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def wait(client: Any, ids: list[str]) -> list[dict[str, Any]]:
    """The jobs' JSON once none is queued or running."""
    while True:
        jobs = [client.get(f"/v1/generations/{i}").json() for i in ids]
        if all(j["status"] not in ("queued", "running") for j in jobs):
            return jobs
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="hub id or folder (default: a random checkpoint)")
    parser.add_argument("--size", choices=["tiny", "small"], default="tiny")
    parser.add_argument("--checkpoint-dir", help="where to keep (and reuse) the random checkpoint")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--duration", type=float, default=2.0, help="seconds of audio per job")
    parser.add_argument("--max-batch", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        model = load(args, Path(scratch))
        print(
            f"model {model.name} on {model.device}, torch threads {torch.get_num_threads()}: "
            f"{args.jobs} jobs of {args.duration:g} s, same settings, no seed\n"
        )
        rows = [run(model, Path(scratch) / f"data-{b}", b, args) for b in [1, *args.max_batch]]
    base = rows[0]["wall"]
    print("| max_batch | batches | wall s | jobs/s | audio s per s | mean latency s | speed-up |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['max_batch']} | {'/'.join(map(str, r['batches']))} | {r['wall']:.2f} | "
            f"{r['jobs_per_s']:.2f} | {r['audio_per_s']:.2f} | {r['mean_latency']:.2f} | "
            f"{base / r['wall']:.2f}x |"
        )


if __name__ == "__main__":
    main()
