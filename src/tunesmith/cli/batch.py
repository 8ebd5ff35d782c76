"""`tunesmith batch`: one file per row of a prompts file, resumable, with a manifest."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InvalidOptionError
from .arguments import (
    add_model_arguments,
    add_output_arguments,
    add_sampling_arguments,
    check_machine,
    check_model_argument,
    check_plot,
    generation_options,
    load,
    model_label,
    say,
)


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `batch` subcommand."""
    batch = commands.add_parser(
        "batch",
        help="generate many clips from a prompts file (resumable)",
        description=(
            "Generate one file per row of PROMPTS_FILE (.txt: a prompt a line; .csv or .jsonl: "
            "prompt, duration, seed, top_k, top_p, temperature, cfg, file, format) into "
            "--out-dir, with a manifest.jsonl row per output. Rerun to resume. Rows naming a "
            "seed run alone; the others are batched under drawn seeds (--seed seeds the draw)."
        ),
    )
    batch.add_argument("prompts_file", metavar="PROMPTS_FILE", help=".txt, .csv or .jsonl")
    batch.add_argument("--out-dir", required=True, help="folder for the clips and manifest")
    batch.add_argument(
        "--batch-size", type=int, default=4, help="prompts generated together (default 4)"
    )
    add_model_arguments(batch)
    add_sampling_arguments(batch)
    add_output_arguments(batch)
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
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidOptionError(f"--out-dir {args.out_dir!r} is a file, not a folder")
    check_plot(args)
    check_machine(args)
    check_model_argument(args.model)
    rows = read_prompts(args.prompts_file, defaults, args.format)
    model = load(args)
    options = JobOptions(
        batch_size=args.batch_size, normalize=args.normalize or "loudness",
        wav_subtype=args.wav_subtype, plot=args.plot, seed=args.seed,
        model_name=model_label(args.model), quantize=args.quantize,
    )  # fmt: skip
    try:
        summary = run_batch(model, rows, out_dir, options)
    except KeyboardInterrupt:
        say("interrupted: finished rows are in the manifest; rerun to resume")
        raise
    say(
        f"batch: {len(summary.done)} done, {len(summary.failed)} failed, "
        f"{len(summary.skipped)} already done (manifest: {out_dir / 'manifest.jsonl'})"
    )
    return 1 if summary.failed else 0
