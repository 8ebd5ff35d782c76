"""Batch jobs: many prompts from a file, batched for throughput, resumable, with a manifest.

The prompts file is read by `tunesmith.jobs.prompts_file`; this module plans and runs the job.
Each finished or failed output adds a line to `manifest.jsonl` in the output folder (flushed at
once, so an interrupted job loses nothing); a rerun skips the rows whose latest line is `done`
and whose file is still there. The latest line per row wins; at the end of a job the manifest
is rewritten with one line per row.

Seeds and batching, the trade-off: a row that names its seed runs on its own, so that it gives
exactly what `tunesmith generate --seed S PROMPT` gives. Rows without a seed are batched
(`batch_size` at a time, same settings only) under one drawn seed; the manifest records that
seed with the prompts of the whole batch and the row's place in it, which is what regenerating
the clip exactly needs (`generate --from-manifest` runs that batch again and keeps the row).
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .. import __version__
from ..finishing.options import FinishOptions
from ..finishing.prompts import hinted_prompt
from ..options import GenerationOptions
from .prompts_file import Row

if TYPE_CHECKING:
    from ..finishing.pipeline import FinishReport

MANIFEST = "manifest.jsonl"
Entry = dict[str, Any]


@dataclass(frozen=True)
class JobOptions:
    """How a batch job writes its outputs. `seed` seeds the drawing of per-batch seeds."""

    batch_size: int = 4
    normalize: str = "loudness"
    wav_subtype: str | None = None
    plot: bool = False
    seed: int | None = None
    progress: bool = True
    model_name: str | None = None  # recorded in the manifest (default: the model's own name)
    quantize: str | None = None


@dataclass
class Summary:
    """What a run did: rows written, failed, and skipped as already done."""

    done: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)


def draw_seed(rng: random.Random | None = None) -> int:
    """A fresh seed in [0, 2**31), from `rng` or the system's entropy."""
    return (rng or random.SystemRandom()).randrange(2**31)


# --- the manifest ---------------------------------------------------------------------------


def read_manifest(path: str | os.PathLike[str]) -> list[Entry]:
    """Every entry of a manifest file, in order (none if there is no file yet)."""
    try:
        return parse_manifest(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []


def parse_manifest(text: str) -> list[Entry]:
    """A manifest's entries, in order; a line cut short by a crash is passed over."""
    entries: list[Entry] = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("row"), int):
            entries.append(entry)
    return entries


def latest_entries(entries: Iterable[Entry]) -> dict[int, Entry]:
    """Row number -> its latest entry."""
    return {entry["row"]: entry for entry in entries}


def append_entry(path: Path, entry: Entry) -> None:
    """Add one line and make it durable before going on."""
    with open(path, "a+b") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":  # a line cut short by a crash: start a fresh one
                f.write(b"\n")
        f.write(json.dumps(entry, ensure_ascii=False).encode("utf-8") + b"\n")
        f.flush()
        os.fsync(f.fileno())


def compact_manifest(path: Path) -> None:
    """Rewrite the manifest with the latest entry of each row, in row order (atomically)."""
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(compacted(read_manifest(path)))
    os.replace(tmp, path)


def compacted(entries: Iterable[Entry]) -> str:
    """A manifest's text with the latest entry of each row, in row order."""
    rows = latest_entries(entries)
    return "".join(json.dumps(rows[number], ensure_ascii=False) + "\n" for number in sorted(rows))


def is_done(row: Row, entry: Entry | None, out_dir: Path, base: Entry | None = None) -> bool:
    """Whether `entry` records this very row (prompt, file, settings, and `base`'s model,
    quantize and normalize) as done, with its file still there."""
    return records_done(row, entry, base) and (out_dir / row.file).is_file()


def records_done(row: Row, entry: Entry | None, base: Entry | None = None) -> bool:
    """Whether `entry` records this very row as done (its file apart: see `is_done`)."""
    if entry is None or entry.get("status") != "done" or row.settings is None:
        return False
    if any(entry.get(key) != value for key, value in (base or {}).items()):
        return False
    recorded, wanted = dict(entry.get("settings") or {}), row.settings_record(row.seed)
    if row.seed is None:  # the seed was drawn: any will do
        recorded.pop("seed", None)
        wanted.pop("seed")
    return (
        entry.get("prompt") == row.prompt and entry.get("file") == row.file and recorded == wanted
    )


# --- writing one clip -----------------------------------------------------------------------


def clip_tags(prompt: str | None, model: str, settings: dict[str, Any], **extra: Any) -> dict:
    """File tags: the prompt as title, the model as artist, everything else as JSON comment."""
    info = {"model": model, **settings, **extra, "tunesmith": __version__}
    return {
        "title": prompt or "(unconditional)",
        "artist": model,
        "software": f"tunesmith {__version__}",
        "comment": json.dumps(info, ensure_ascii=True, sort_keys=True),
    }


def save_clip(
    path: Path,
    wav: torch.Tensor,
    sample_rate: int,
    *,
    normalize: str,
    subtype: str | None,
    tags: dict[str, str],
    plot: bool,
    finish: FinishOptions | None = None,
) -> FinishReport:
    """Finish (tempo, key, loop, fades: `finish`; then the level), write (with tags, and the
    loop points of a loop) and optionally picture one [C, N] clip; what finishing did."""
    from ..finishing.files import write_finished
    from ..finishing.pipeline import finish as finish_clip

    path.parent.mkdir(parents=True, exist_ok=True)
    options = FinishOptions.of(finish, normalize=normalize)
    done = finish_clip(wav.detach().float().cpu(), sample_rate, options)
    write_finished(path, done, sample_rate, subtype, tags)
    if plot:
        from ..audio.spectrogram import plot_spectrogram, png_path

        plot_spectrogram(done.audio, sample_rate, png_path(path), title=tags.get("title"))
    return done.report


# --- the job --------------------------------------------------------------------------------


def plan_batches(rows: Iterable[Row], batch_size: int) -> list[list[Row]]:
    """Seeded rows alone; unseeded rows grouped by settings, `batch_size` at a time, in order."""
    groups: dict[Any, list[Row]] = {}
    for row in rows:
        key: Any = ("seeded", row.number) if row.seed is not None else row.settings
        groups.setdefault(key, []).append(row)
    return [g[i : i + batch_size] for g in groups.values() for i in range(0, len(g), batch_size)]


def run_batch(
    model: Any,
    rows: list[Row],
    out_dir: str | os.PathLike[str],
    options: JobOptions = JobOptions(),
    on_row: Callable[[Entry], None] | None = None,
) -> Summary:
    """Generate every row not yet done into `out_dir`, recording each in the manifest.

    A row that cannot be generated or written is recorded as failed and the job goes on.
    `on_row` sees each manifest entry as it is written.
    """
    from tqdm import tqdm

    job = _Job(model, Path(out_dir), options, on_row)
    previous = latest_entries(read_manifest(job.manifest))
    pending: list[Row] = []
    for row in rows:
        if row.error is None and is_done(row, previous.get(row.number), job.folder, job.base):
            job.summary.skipped.append(row.number)
        elif row.error is None:
            pending.append(row)
    batches = plan_batches(pending, options.batch_size)
    rng = random.Random(options.seed) if options.seed is not None else None
    total = sum(model.frames_for(b[0].settings.duration) for b in batches if b[0].settings)
    # Nothing left to make (a rerun of a finished job): no bar at all, not an empty one.
    bar = tqdm(total=total, desc="batch", unit="frame", disable=not options.progress or not total)
    with bar as job.bar:  # the whole job's frames, with ETA
        for row in rows:
            if row.error is not None:
                job.record(row.entry(job.base, error=row.error))
        for batch in batches:
            job.run(batch, draw_seed(rng))
    compact_manifest(job.manifest)
    return job.summary


class _Job:
    """One run of a batch job: where it writes, and what it has done so far."""

    def __init__(
        self, model: Any, folder: Path, options: JobOptions, on_row: Callable[[Entry], None] | None
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.model, self.folder, self.options, self.on_row = model, folder, options, on_row
        self.manifest = folder / MANIFEST
        self.summary = Summary()
        self.bar: Any = None
        self.base = job_base(options.model_name or model.name, options)

    def record(self, entry: Entry) -> None:
        append_entry(self.manifest, entry)
        done, failed = self.summary.done, self.summary.failed
        (done if entry["status"] == "done" else failed).append(entry["row"])
        self.bar.set_postfix_str(f"{len(done)} done, {len(failed)} failed")
        if self.on_row is not None:
            self.on_row(entry)

    def run(self, batch: list[Row], drawn: int) -> None:
        """Generate one batch (one model call) and record its rows as each is written."""
        for entry in make_batch(
            self.model, batch, drawn, self.folder, self.options, self.base, self.bar.update
        ):
            self.record(entry)


def job_base(model_name: str, options: JobOptions) -> Entry:
    """What every manifest entry of a job records about how it was made."""
    return {"model": model_name, "quantize": options.quantize, "normalize": options.normalize}


def make_batch(
    model: Any,
    batch: list[Row],
    drawn: int,
    folder: Path,
    options: JobOptions,
    base: Entry,
    on_frames: Callable[[int], Any] | None = None,
) -> Iterator[Entry]:
    """Generate one batch (one model call), write its rows' files into `folder`, and yield each
    row's manifest entry as its file is written (failed ones too: a failure is recorded and
    the job goes on). Unseeded rows take the `drawn` seed."""
    settings = batch[0].settings
    assert settings is not None
    seed = batch[0].seed if batch[0].seed is not None else drawn
    # What the model reads: each row's text with its tempo and key, when it has them.
    prompts = [hinted_prompt(row.prompt, row.finish) if row.finish else row.prompt for row in batch]
    start = time.perf_counter()
    try:
        wav = generate_batch(model, prompts, settings, seed, on_frames)
    except Exception as err:  # a failed batch is recorded; the job goes on
        for row in batch:
            yield row.entry(base, seed=seed, error=f"{type(err).__name__}: {err}")
        return
    share = (time.perf_counter() - start) / len(batch)
    for index, row in enumerate(batch):
        begin = time.perf_counter()
        subtype = options.wav_subtype if row.format == "wav" else None
        info = {"prompts": prompts, "index": index}
        tags = clip_tags(row.prompt, base["model"], row.settings_record(seed), batch=info)
        try:
            report = save_clip(
                folder / row.file, wav[index], model.sample_rate, tags=tags,
                normalize=options.normalize, subtype=subtype, plot=options.plot, finish=row.finish,
            )  # fmt: skip
        except Exception as err:  # e.g. a file where a folder should be
            yield row.entry(base, seed=seed, error=f"{type(err).__name__}: {err}")
            continue
        taken = share + time.perf_counter() - begin
        entry = row.entry(base, seed=seed, subtype=subtype, batch=info, seconds=taken)
        if report.record() is not None:
            entry["finish"] = report.record()
        yield entry


def generate_batch(
    model: Any,
    prompts: list[str | None],
    settings: GenerationOptions,
    seed: int,
    on_frames: Callable[[int], Any] | None = None,
) -> torch.Tensor:
    """The same audio as `model.generate(prompts, settings, seed=seed)`, reporting frames as
    made."""
    blocks = []
    with model.token_stream(prompts, settings, seed=seed) as stream:
        for block in stream:  # [B, K, n]
            blocks.append(block)
            if on_frames is not None:
                on_frames(block.shape[-1])
    return model.decode(torch.cat(blocks, dim=2))
