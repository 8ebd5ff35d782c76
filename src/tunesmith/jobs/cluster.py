"""Batch jobs on a Ray cluster: the rows, seeds, files and manifest of `jobs.batch`, made by
model replicas that are Ray actors.

Ray does the distributing and the surviving, not a scheduler of ours:
- each replica is an actor holding one loaded model (`Replica`), with its CPUs or GPU reserved
  by Ray's resources; `ray.util.ActorPool` hands each an unfinished batch as it frees up;
- a replica that dies (its process killed, its node gone) is restarted by Ray
  (`max_restarts`), and the batch it was making is run again (`max_task_retries`), on the
  restarted actor or, with the node gone, wherever Ray places it;
- a batch's rows are generated and their files written (`make_batch`) in a scratch folder on
  the replica, and come back to the driver as bytes through Ray's object store.

The driver alone writes: the files into `out` (a local folder, or any fsspec URL: `s3://`,
`gs://`, `memory://`, ...) and then each row's manifest entry, once, when its result arrives.
A retried batch returns once, so no row is recorded twice; a row is recorded only after its
file exists, so a rerun (from any machine that sees `out`) resumes exactly as `tunesmith batch`
does, skipping finished rows whose files are there.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidOptionError
from .batch import (
    MANIFEST,
    Entry,
    JobOptions,
    Summary,
    append_entry,
    compacted,
    draw_seed,
    job_base,
    latest_entries,
    make_batch,
    parse_manifest,
    plan_batches,
    records_done,
)
from .prompts_file import Row

RAY_HINT = "--ray needs Ray: pip install 'tunesmith[ray]'"


@dataclass(frozen=True)
class ModelSpec:
    """How every replica loads the model: a hub id (each node's cache) or a path every node
    sees, with the load options of `MusicGen.from_pretrained`."""

    name: str
    device: str = "auto"
    quantize: str | None = None
    text_encoder: str | None = None
    compile: bool = False
    adapters: tuple[str, ...] = ()  # LoRA folders every node sees
    adapter_scales: tuple[float, ...] = ()


@dataclass(frozen=True)
class ClusterOptions:
    """Where the job runs. address: "auto" (the cluster `RAY_ADDRESS` names, else a local Ray
    started for the job) or a cluster's address. replicas: None for one per GPU, or where
    there are none, one per `cpus_per_replica` CPUs. max_restarts: how often Ray brings back
    a replica that died (and runs its batch again)."""

    address: str = "auto"
    replicas: int | None = None
    cpus_per_replica: int = 1
    max_restarts: int = 3


@dataclass
class ReplicaStats:
    """What one replica made, for the throughput table at the end."""

    node: str
    rows: int = 0
    audio_seconds: float = 0.0
    busy_seconds: float = 0.0


@dataclass
class ClusterSummary(Summary):
    """A job's rows (as `Summary`) and each replica's throughput."""

    replicas: dict[int, ReplicaStats] = field(default_factory=dict)
    wall_seconds: float = 0.0


def require_ray() -> Any:
    """The `ray` module, or an InvalidOptionError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise InvalidOptionError(RAY_HINT) from None
    return ray


class Replica:
    """A model replica (a Ray actor): loads the model once, then makes batches."""

    def __init__(self, index: int, spec: ModelSpec, threads: int) -> None:
        import torch

        from ..musicgen import MusicGen

        torch.set_num_threads(max(1, threads))
        self.index = index
        self.node = f"{socket.gethostname()}:{_node_id()}"
        self.model = MusicGen.from_pretrained(
            spec.name, device=spec.device, quantize=spec.quantize,
            text_encoder=spec.text_encoder, compile=spec.compile,
            adapter=list(spec.adapters), adapter_scale=list(spec.adapter_scales) or None,
        )  # fmt: skip

    def pid(self) -> int:
        return os.getpid()

    def run(self, batch: list[Row], drawn: int, options: JobOptions, base: Entry) -> dict:
        """One batch: its rows' manifest entries (with this replica and node) and the files
        they name, as bytes (a row's spectrogram PNG too, with `options.plot`)."""
        start = time.perf_counter()
        files: dict[str, bytes] = {}
        entries = []
        with tempfile.TemporaryDirectory(prefix="tunesmith-replica-") as scratch:
            folder = Path(scratch)
            for entry in make_batch(self.model, batch, drawn, folder, options, base):
                entry = {**entry, "replica": self.index, "node": self.node}
                entries.append(entry)
                if entry["status"] == "done":
                    for path in _outputs(folder, entry["file"]):
                        files[path.relative_to(folder).as_posix()] = path.read_bytes()
        seconds = sum(
            e["settings"]["duration"] for e in entries if e["status"] == "done" and e["settings"]
        )
        return {
            "entries": entries,
            "files": files,
            "replica": self.index,
            "node": self.node,
            "audio_seconds": seconds,
            "busy_seconds": time.perf_counter() - start,
        }


def _outputs(folder: Path, file: str) -> list[Path]:
    path = folder / file
    return [p for p in (path, path.with_suffix(".png")) if p.is_file()]


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()[:12]


class Destination:
    """Where the job's files and manifest go: a local folder or an fsspec URL."""

    def __init__(self, out: str) -> None:
        import fsspec

        self.fs, self.root = fsspec.core.url_to_fs(out)
        self.local = "file" in (
            self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        )
        self.fs.makedirs(self.root, exist_ok=True)
        self.manifest = f"{self.root}/{MANIFEST}"
        self.lines: list[str] = []  # the whole manifest, rewritten after each batch (not local)

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def exists(self, name: str) -> bool:
        return bool(self.fs.exists(self.path(name)))

    def entries(self) -> list[Entry]:
        """The manifest so far (a line cut short by a crash is passed over)."""
        if not self.fs.exists(self.manifest):
            return []
        text = self.fs.cat_file(self.manifest).decode("utf-8")
        self.lines = [line for line in text.splitlines() if line.strip()]
        return parse_manifest(text)

    def write_file(self, name: str, data: bytes) -> None:
        """Write a whole file: beside it first, then moved in place (never half a file)."""
        target = self.path(name)
        parent = target.rpartition("/")[0]
        if parent:
            self.fs.makedirs(parent, exist_ok=True)
        partial = f"{target}.partial"
        self.fs.pipe_file(partial, data)
        self.fs.mv(partial, target)

    def record(self, entries: list[Entry]) -> None:
        """Add manifest lines, durably: appended on a local disk, rewritten elsewhere."""
        lines = [json.dumps(e, ensure_ascii=False) for e in entries]
        if self.local:
            for entry in entries:
                append_entry(Path(self.manifest), entry)
            return
        self.lines += lines
        self.fs.pipe_file(self.manifest, ("\n".join(self.lines) + "\n").encode("utf-8"))

    def compact(self, entries: list[Entry]) -> None:
        """Rewrite the manifest with the latest entry of each row, in row order."""
        text = compacted(entries)
        self.lines = text.splitlines()
        self.write_file(MANIFEST, text.encode("utf-8"))


def run_on_ray(
    spec: ModelSpec,
    rows: list[Row],
    out: str,
    options: JobOptions | None = None,
    cluster: ClusterOptions | None = None,
    on_row: Callable[[Entry], None] | None = None,
) -> ClusterSummary:
    """Make every row not yet done in `out` on a Ray cluster (see the module docstring)."""
    ray = require_ray()
    options, cluster = options or JobOptions(), cluster or ClusterOptions()
    from ray.util import ActorPool
    from tqdm import tqdm

    destination = Destination(out)
    base = job_base(options.model_name or spec.name, options)
    previous = destination.entries()
    latest = latest_entries(previous)
    summary = ClusterSummary()
    pending = []
    for row in rows:
        if row.error is not None:
            continue
        if records_done(row, latest.get(row.number), base) and destination.exists(row.file):
            summary.skipped.append(row.number)
        else:
            pending.append(row)
    failed_rows = [row.entry(base, error=row.error) for row in rows if row.error is not None]
    batches = plan_batches(pending, options.batch_size)
    rng = random.Random(options.seed) if options.seed is not None else None
    work = [(batch, draw_seed(rng)) for batch in batches]  # seeds drawn in order, as on one machine
    recorded: list[Entry] = list(previous)

    def record(entries: list[Entry]) -> None:
        destination.record(entries)
        recorded.extend(entries)
        for entry in entries:
            (summary.done if entry["status"] == "done" else summary.failed).append(entry["row"])
            if on_row is not None:
                on_row(entry)

    record(failed_rows)
    started = time.perf_counter()
    if work:
        started_here = _connect(ray, cluster)
        actors: list[Any] = []
        try:
            actors = _replicas(ray, spec, cluster)
            pool = ActorPool(actors)
            audio = 0.0
            bar = tqdm(total=len(pending), desc="cluster", unit="row", disable=not options.progress)
            with bar:
                results = pool.map_unordered(
                    lambda actor, item: actor.run.remote(item[0], item[1], options, base), work
                )
                for result in results:
                    for name, data in result["files"].items():
                        destination.write_file(name, data)
                    record(result["entries"])
                    stats = summary.replicas.setdefault(
                        result["replica"], ReplicaStats(result["node"])
                    )
                    stats.rows += len(result["entries"])
                    stats.audio_seconds += result["audio_seconds"]
                    stats.busy_seconds += result["busy_seconds"]
                    audio += result["audio_seconds"]
                    bar.update(len(result["entries"]))
                    bar.set_postfix_str(f"{audio:.0f} s of audio, {len(summary.failed)} failed")
        finally:  # Ctrl-C too: the replicas stop, the manifest holds every finished row
            for actor in actors:
                ray.kill(actor)
            if started_here:
                ray.shutdown()
    summary.wall_seconds = time.perf_counter() - started
    destination.compact(recorded)
    return summary


def _connect(ray: Any, cluster: ClusterOptions) -> bool:
    """Join the cluster (True if a local one was started for this job)."""
    if ray.is_initialized():
        return False
    address = cluster.address
    if address == "auto" and not os.environ.get("RAY_ADDRESS"):
        ray.init(include_dashboard=False, configure_logging=False, log_to_driver=False)
        return True
    ray.init(
        address=None if address == "auto" else address,
        configure_logging=False,
        log_to_driver=False,
    )
    return False


def _replicas(ray: Any, spec: ModelSpec, cluster: ClusterOptions) -> list[Any]:
    """Start the replicas, each loading the model, and wait until all are ready."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    use_gpu = gpus > 0 and spec.device != "cpu"
    cpus = max(1, cluster.cpus_per_replica)
    count = cluster.replicas or (gpus if use_gpu else max(1, int(resources.get("CPU", 1)) // cpus))
    actor = ray.remote(Replica).options(
        num_cpus=cpus,
        num_gpus=1 if use_gpu else 0,
        max_restarts=cluster.max_restarts,
        max_task_retries=cluster.max_restarts,
    )
    spec = dataclasses.replace(spec, device="cuda" if use_gpu else spec.device)
    actors = [actor.remote(i, spec, cpus) for i in range(count)]
    try:
        ray.get([a.pid.remote() for a in actors])  # each has loaded the model
    except ray.exceptions.RayError as err:
        for a in actors:
            ray.kill(a)
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise InvalidOptionError(
            f"a model replica could not load {spec.name!r}: {reason}"
        ) from None
    return actors
