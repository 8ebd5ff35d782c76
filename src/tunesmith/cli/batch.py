"""`tunesmith batch`, and the output options `tunesmith generate` shares with it: --format,
--wav-subtype, --normalize, --plot, and --from-manifest/--row to regenerate a batch's clip.

Wired into `cli.py` with `register(commands)` (the batch command) and
`add_generate_options(generate_parser)`; `finish_generate_outputs` writes generate's files.
Like cli.py, nothing heavy is imported before a command runs.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import InvalidOptionError

FORMATS = ("wav", "flac", "mp3", "ogg")
NORMALIZE = ("loudness", "peak", "rms", "none")  # tunesmith.loudness.NORMALIZE_MODES
WAV_SUBTYPES = ("PCM_16", "PCM_24", "FLOAT")


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """--format, --wav-subtype, --normalize, --plot."""
    parser.add_argument(
        "--format", choices=FORMATS, default=None, help="audio format (default: the extension)"
    )
    parser.add_argument(
        "--wav-subtype", choices=WAV_SUBTYPES, default=None, help="WAV samples (default PCM_16)"
    )
    parser.add_argument(
        "--normalize",
        choices=NORMALIZE,
        default=None,
        help="level: loudness (-14 LUFS, default), peak (-1 dBFS), rms (-18 dBFS), none",
    )
    parser.add_argument(
        "--plot", action="store_true", help="also write a spectrogram PNG beside each file"
    )


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `batch` subcommand."""
    from . import main as cli

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
    cli.add_model_arguments(batch)
    cli.add_sampling_arguments(batch)
    add_output_arguments(batch)
    batch.set_defaults(run=run_batch_command)


def add_generate_options(parser: argparse.ArgumentParser) -> None:
    """Add the output options and --from-manifest/--row to `generate` (call after its
    set_defaults(run=...)): PROMPT becomes optional with --from-manifest, and the command is
    wrapped to check these options, then run as before."""
    add_output_arguments(parser)
    parser.add_argument(
        "--from-manifest",
        metavar="MANIFEST",
        help="regenerate a batch clip exactly (its prompt, seed, settings and model)",
    )
    parser.add_argument("--row", type=int, default=None, help="with --from-manifest: the row")
    for action in parser._actions:  # argparse has no public way to relax a positional
        if action.dest == "prompts":
            action.nargs, action.required = "*", False
    inner = parser.get_default("run")
    parser.set_defaults(run=functools.partial(_run_generate, parser, inner))


def _run_generate(
    parser: argparse.ArgumentParser, inner: Callable[[argparse.Namespace], Any], args: Any
) -> int:
    if args.from_manifest is not None:
        if args.prompts:
            parser.error("--from-manifest takes its prompt from the manifest: give no PROMPT")
        if args.row is None:
            parser.error("--from-manifest needs --row N")
        return run_from_manifest(args)
    if args.row is not None:
        parser.error("--row needs --from-manifest MANIFEST")
    if not args.prompts:
        parser.error("the following arguments are required: PROMPT")
    if args.stream and args.normalize not in (None, "none"):
        raise InvalidOptionError("--normalize needs the whole clip: leave it out with --stream")
    if args.stream and args.plot:
        raise InvalidOptionError("--plot needs the whole clip: leave it out with --stream")
    _check_plot(args)
    if args.output != "-":
        args.output = output_with_format(args.output, args.format)
    if args.seed is None:  # draw it here, so that the file's tags can name it
        import random

        args.seed = random.SystemRandom().randrange(2**31)
    return int(inner(args) or 0)


def output_with_format(output: str, fmt: str | None) -> str:
    """OUTPUT with --format's extension added if it has none; a clash is an error."""
    suffix = Path(output).suffix.lower().lstrip(".")
    if fmt is None or suffix == fmt:
        return output
    if not suffix:
        return f"{output}.{fmt}"
    raise InvalidOptionError(f"output {output!r} does not end in .{fmt} (--format {fmt})")


def finish_generate_outputs(args: Any, model: Any, paths: Sequence[Path], wav: Any) -> None:
    """Level, tag (prompt, seed, model, settings), write and optionally plot generate's clips:
    `wav` [B, C, N] for the B prompts, one file each."""
    from ..jobs.batch import clip_tags, save_clip

    prompts = [p or None for p in args.prompts]
    settings = _settings_record(args)
    for index, (path, audio) in enumerate(zip(paths, wav, strict=True)):
        extra: dict[str, Any] = {}
        if len(prompts) > 1:
            extra["batch"] = {"prompts": prompts, "index": index}
        if getattr(args, "continue_from", None):
            extra["continue"] = str(args.continue_from)
        save_clip(
            Path(path), audio, model.sample_rate,
            normalize=getattr(args, "normalize", None) or "loudness",
            subtype=_subtype(path, getattr(args, "wav_subtype", None)),
            tags=clip_tags(prompts[index], model.name, settings, **extra),
            plot=bool(getattr(args, "plot", False)),
        )  # fmt: skip


def run_from_manifest(args: Any) -> int:
    """`generate --from-manifest M --row N -o OUT`: the row's clip again, sample for sample."""
    from ..audio.files import check_writable
    from ..jobs.batch import clip_tags, generate_batch, read_manifest, save_clip
    from ..jobs.prompts_file import Settings
    from . import main as cli

    manifest = Path(args.from_manifest)
    if not manifest.is_file():
        raise InvalidOptionError(f"manifest {str(manifest)!r} does not exist")
    found = [e for e in read_manifest(manifest) if e["row"] == args.row and e["status"] == "done"]
    if not found:
        raise InvalidOptionError(f"manifest {str(manifest)!r} has no finished row {args.row}")
    entry = found[-1]
    if args.output == "-" or args.stream or args.continue_from:
        raise InvalidOptionError("--from-manifest writes a file: no -o -, --stream or --continue")
    output = Path(output_with_format(args.output, args.format))
    check_writable(output)
    _check_plot(args)
    _check_machine(args, entry["model"])
    settings, seed = Settings.from_record(entry["settings"]), entry["settings"]["seed"]
    batch = entry.get("batch") or {"prompts": [entry["prompt"]], "index": 0}
    manifest_args = {"model": entry["model"], "quantize": entry.get("quantize")}
    model = cli.load(argparse.Namespace(**{**vars(args), **manifest_args}))
    wav = generate_batch(model, batch["prompts"], settings, seed)[batch["index"]]
    fmt = output.suffix.lower().lstrip(".") or "wav"
    subtype = args.wav_subtype or (entry.get("subtype") if fmt == entry.get("format") else None)
    save_clip(
        output, wav, model.sample_rate,
        normalize=args.normalize or entry.get("normalize") or "loudness",
        subtype=_subtype(output, subtype), plot=args.plot,
        tags=clip_tags(entry["prompt"], entry["model"], entry["settings"], batch=batch),
    )  # fmt: skip
    print(f"wrote {output} (row {args.row} of {manifest}, seed {seed})", flush=True)
    return 0


def run_batch_command(args: argparse.Namespace) -> int:
    """`tunesmith batch`: check everything, load once, run the job, report in one line."""
    from ..jobs.batch import JobOptions, run_batch
    from ..jobs.prompts_file import Settings, read_prompts
    from . import main as cli

    cli.sampling_options(args)
    if args.batch_size < 1:
        raise InvalidOptionError(f"--batch-size must be at least 1, got {args.batch_size}")
    out_dir = Path(args.out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidOptionError(f"--out-dir {args.out_dir!r} is a file, not a folder")
    _check_plot(args)
    _check_machine(args, args.model)
    defaults = Settings(
        duration=args.duration, top_k=args.top_k, top_p=args.top_p,
        temperature=args.temperature, cfg=args.cfg, stride=args.stride,
    )  # fmt: skip
    rows = read_prompts(args.prompts_file, defaults, args.format)
    model = cli.load(args)
    options = JobOptions(
        batch_size=args.batch_size, normalize=args.normalize or "loudness",
        wav_subtype=args.wav_subtype, plot=args.plot, seed=args.seed,
        model_name=_model_label(args.model), quantize=args.quantize,
    )  # fmt: skip
    try:
        summary = run_batch(model, rows, out_dir, options)
    except KeyboardInterrupt:
        print("interrupted: finished rows are in the manifest; rerun to resume", file=sys.stderr)
        raise
    line = (
        f"batch: {len(summary.done)} done, {len(summary.failed)} failed, "
        f"{len(summary.skipped)} already done (manifest: {out_dir / 'manifest.jsonl'})"
    )
    print(line, file=sys.stderr if summary.failed else sys.stdout, flush=True)
    return 1 if summary.failed else 0


def _check_plot(args: Any) -> None:
    if getattr(args, "plot", False):
        from ..audio.spectrogram import require_matplotlib

        require_matplotlib()


def _check_machine(args: Any, model: str) -> None:
    from .main import check_machine, check_model_argument

    check_machine(args)
    check_model_argument(model)


def _model_label(name: str) -> str:
    """A local folder as an absolute path (the manifest may be used from elsewhere)."""
    from ..checkpoints.loading import looks_like_path

    return str(Path(name).expanduser().resolve()) if looks_like_path(name) else name


def _settings_record(args: Any) -> dict[str, Any]:
    return {
        "duration": args.duration, "seed": args.seed, "top_k": args.top_k, "top_p": args.top_p,
        "temperature": args.temperature, "cfg": args.cfg, "stride": args.stride,
    }  # fmt: skip


def _subtype(path: Path | str, subtype: str | None) -> str | None:
    suffix = Path(path).suffix.lower()
    return subtype if suffix in ("", ".wav") else None
