"""`tunesmith batch`: one file per row of a prompts file, resumable, with a manifest."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InvalidOptionError
from .arguments import (
    add_model_arguments,
    add_output_arguments,
    add_sampling_arguments,
    check_finishing,
    check_machine,
    check_model_argument,
    check_plot,
    finish_options,
    generation_options,
    load,
    model_label,
    say,
)

if TYPE_CHECKING:  # jobs.batch imports torch: not at the CLI's start
    from ..jobs.batch import JobOptions, Summary
    from ..jobs.prompts_file import Row


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `batch` subcommand."""
    batch = commands.add_parser(
        "batch",
        help="generate many clips from a prompts file (resumable)",
        description=(
            "Generate one file per row of PROMPTS_FILE (.txt: a prompt a line; .csv or .jsonl: "
            "prompt, duration, seed, top_k, top_p, temperature, cfg, file, format, bpm, key, "
            "loop, fade_in, fade_out) into "
            "--out-dir, with a manifest.jsonl row per output. Rerun to resume. Rows naming a "
            "seed run alone; the others are batched under drawn seeds (--seed seeds the draw)."
        ),
    )
    batch.add_argument("prompts_file", metavar="PROMPTS_FILE", help=".txt, .csv or .jsonl")
    batch.add_argument("--out-dir", required=True, help="folder for the clips and manifest")
    batch.add_argument(
        "--batch-size", type=int, default=4, help="prompts generated together (default 4)"
    )
    batch.add_argument(
        "--skip-bad-rows",
        action="store_true",
        help="make the rows that can run and skip those that cannot (default: list them all and "
        "stop before loading the model)",
    )
    add_model_arguments(batch)
    add_sampling_arguments(batch)
    add_output_arguments(batch)
    cluster = batch.add_argument_group("on a Ray cluster (pip install 'tunesmith[ray]')")
    cluster.add_argument(
        "--ray",
        nargs="?",
        const="auto",
        default=None,
        metavar="ADDRESS",
        help="run on Ray: auto (the cluster $RAY_ADDRESS names, else a local one) or an address;"
        " --out-dir may then be an fsspec URL (s3://, gs://, ...)",
    )
    cluster.add_argument(
        "--replicas",
        type=int,
        default=None,
        help="model replicas (default: one per GPU, else one per --cpus-per-replica CPUs)",
    )
    cluster.add_argument(
        "--cpus-per-replica", type=int, default=1, help="CPUs (and threads) each replica takes"
    )
    batch.set_defaults(run=run_batch_command)


def run_batch_command(args: argparse.Namespace) -> int:
    """Check everything, load once, run the job, report in one line."""
    import dataclasses

    from ..jobs.batch import JobOptions, run_batch
    from ..jobs.prompts_file import read_prompts

    # The command line's settings are each row's defaults; --seed seeds the drawn seeds.
    defaults = dataclasses.replace(generation_options(args), seed=None)
    if args.batch_size < 1:
        raise InvalidOptionError(f"--batch-size must be at least 1, got {args.batch_size}")
    out_dir = Path(args.out_dir)
    if "://" not in args.out_dir and out_dir.exists() and not out_dir.is_dir():
        raise InvalidOptionError(f"--out-dir {args.out_dir!r} is a file, not a folder")
    check_plot(args)
    check_machine(args)
    check_model_argument(args.model)
    finish = finish_options(args)
    rows = check_rows(args, out_dir, read_prompts(args.prompts_file, defaults, args.format, finish))
    for row in rows:  # what the rows' tempo, loops and keys need is installed
        if row.finish is not None:
            check_finishing(row.finish, [Path(row.file)])
    options = JobOptions(
        batch_size=args.batch_size, normalize=args.normalize or "loudness",
        wav_subtype=args.wav_subtype, plot=args.plot, seed=args.seed,
        model_name=model_label(args.model), quantize=args.quantize,
    )  # fmt: skip
    if args.ray is not None:
        return run_on_cluster(args, rows, options)
    if "://" in args.out_dir:
        raise InvalidOptionError("--out-dir as a URL needs --ray (one machine writes a folder)")
    model = load(args)
    try:
        summary = run_batch(model, rows, out_dir, options)
    except KeyboardInterrupt:
        say("interrupted: finished rows are in the manifest; rerun to resume")
        raise
    failed, counts = tally(summary, rows)
    say(f"batch: {counts} (manifest: {out_dir / 'manifest.jsonl'})")
    return 1 if failed else 0


def check_rows(args: argparse.Namespace, out_dir: Path, rows: list[Row]) -> list[Row]:
    """Every row checked before the model loads (its values, its file, where the file goes):
    the bad ones listed, each with its line and why, and the job stopped; or with
    --skip-bad-rows, each said and skipped."""
    from ..jobs.prompts_file import BatchFileError, bad_rows_report, check_destinations

    if "://" not in args.out_dir:
        rows = check_destinations(rows, out_dir)
    bad = [row for row in rows if row.error is not None]
    if bad and not args.skip_bad_rows:
        raise BatchFileError(bad_rows_report(args.prompts_file, rows))
    for row in bad:
        say(f"skipping {args.prompts_file} line {row.line}: {row.error}")
    return rows


def tally(summary: Summary, rows: list[Row]) -> tuple[list[int], str]:
    """(the rows that failed while made, the summary's counts in words); bad rows skipped
    are counted apart."""
    bad = {row.number for row in rows if row.error is not None}
    failed = [n for n in summary.failed if n not in bad]
    counts = f"{len(summary.done)} done, {len(failed)} failed, {len(summary.skipped)} already done"
    return failed, counts + (f", {len(bad)} bad rows skipped" if bad else "")


def run_on_cluster(args: argparse.Namespace, rows: list[Row], options: JobOptions) -> int:
    """`batch --ray`: the same job over Ray replicas; one line, then each replica's figures."""
    from ..jobs.cluster import ClusterOptions, ModelSpec, require_ray, run_on_ray

    require_ray()
    if args.replicas is not None and args.replicas < 1:
        raise InvalidOptionError(f"--replicas must be at least 1, got {args.replicas}")
    if args.cpus_per_replica < 1:
        raise InvalidOptionError(
            f"--cpus-per-replica must be at least 1, got {args.cpus_per_replica}"
        )
    spec = ModelSpec(
        model_label(args.model), device=args.device, quantize=args.quantize,
        text_encoder=args.text_encoder, compile=args.compile,
        adapters=tuple(str(Path(a).resolve()) for a in args.adapter or ()),
        adapter_scales=tuple(args.adapter_scale or ()),
    )  # fmt: skip
    cluster = ClusterOptions(args.ray, args.replicas, args.cpus_per_replica)
    try:
        summary = run_on_ray(spec, rows, args.out_dir, options, cluster)
    except KeyboardInterrupt:
        say("interrupted: finished rows are in the manifest; rerun to resume")
        raise
    failed, counts = tally(summary, rows)
    say(
        f"batch on ray: {counts} in {summary.wall_seconds:.1f} s "
        f"(manifest: {args.out_dir.rstrip('/')}/manifest.jsonl)"
    )
    for index, stats in sorted(summary.replicas.items()):
        rate = stats.rows / stats.busy_seconds * 60 if stats.busy_seconds else 0.0
        say(
            f"  replica {index} on {stats.node}: {stats.rows} rows, {stats.audio_seconds:.1f} s "
            f"of audio, {rate:.1f} rows/min busy"
        )
    return 1 if failed else 0
