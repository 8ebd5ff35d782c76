"""`tunesmith compose`: a piece whose sections change over time, from a piece file (YAML,
JSON or TOML) or inline `--section "SECONDS: TEXT"`s, as one audio file.

The command line's settings win over the file's, and the file's over the defaults. Everything
is checked before the model loads (each error names the section or the file's line), and
nothing is written on a refusal.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import time
from pathlib import Path
from typing import Any

from ..errors import InvalidOptionError
from ..finishing.options import FinishOptions
from ..options import DEFAULT_MODEL, DEFAULTS
from .arguments import (
    add_model_arguments,
    add_output_arguments,
    check_finishing,
    check_machine,
    check_model_argument,
    check_plot,
    load,
    output_with_format,
    say,
    wav_subtype,
)

# Flags whose value, where given, replaces the piece file's (dest -> the piece's name).
SETTINGS = {
    "seed": "seed", "top_k": "top_k", "top_p": "top_p", "temperature": "temperature",
    "cfg": "cfg_scale", "stride": "stride", "fade_in": "fade_in", "fade_out": "fade_out",
}  # fmt: skip


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `compose` subcommand."""
    d = DEFAULTS
    comp = commands.add_parser(
        "compose",
        help="compose a piece from sections that change over time",
        description="Compose one piece from a timeline of sections (a piece file, or "
        '--section "SECONDS: TEXT" given in order), each continuing the music before it.',
    )
    comp.add_argument("piece", nargs="?", metavar="PIECE", help="piece file (.yaml, .json, .toml)")
    comp.add_argument(
        "--section",
        action="append",
        default=None,
        metavar="'SECONDS: TEXT'",
        help='a section, in order (instead of a file), e.g. --section "20: soft piano intro"',
    )
    comp.add_argument("-o", "--output", required=True, help="output file (.wav, .flac, .mp3, .ogg)")
    add_model_arguments(comp)
    comp.set_defaults(model=None)  # given, it wins over the file's `model`
    number = {"type": float, "default": None}
    comp.add_argument("--seed", type=int, default=None, help="random seed (default: drawn)")
    comp.add_argument("--top-k", type=int, default=None, help=f"default {d.top_k} (1 = greedy)")
    comp.add_argument("--top-p", **number, help=f"default {d.top_p:g} (0 = off)")
    comp.add_argument("--temperature", **number, help=f"default {d.temperature:g}")
    comp.add_argument("--cfg", **number, help=f"guidance scale (default {d.cfg_scale:g})")
    comp.add_argument("--stride", **number, help=f"seconds a window adds (default {d.stride:g})")
    comp.add_argument(
        "--transition", **number, help="seconds over which each section blends in from the one "
        "before, for sections that do not set theirs (default 0)",
    )  # fmt: skip
    comp.add_argument(
        "--context", **number, help="seconds of the piece so far that prompt each section, for "
        "sections that do not set theirs (default: the window minus the stride)",
    )  # fmt: skip
    add_output_arguments(comp)
    # Fades given on the command line win over the piece file's: None tells "not given".
    comp.set_defaults(run=run_compose, usage_error=comp.error, fade_in=None, fade_out=None)


def run_compose(args: argparse.Namespace) -> int:
    """Check everything, load the model, compose, write, say what was written."""
    piece = read_piece_arguments(args)
    check_machine(args)
    check_plot(args)
    path = check_output(args)
    piece, finish = piece_finishing(args, piece, path)
    args.model = args.model or piece.model or DEFAULT_MODEL
    check_model_argument(args.model)

    model = load(args)
    start = time.perf_counter()
    seconds = compose_to_file(model, piece, args, path, finish)
    took = time.perf_counter() - start
    count = len(piece.sections)
    say(f"wrote {path} ({seconds:.1f} s of audio, {count} sections, at {model.sample_rate} Hz) "
        f"in {took:.1f} s")  # fmt: skip
    return 0


def read_piece_arguments(args: argparse.Namespace) -> Any:
    """The piece the command line describes (a file, or --section), its settings from the
    flags given, checked; the seed drawn here if none is given (the tags name it)."""
    from ..composition.piece import Piece, inline_section
    from ..composition.piece_file import read_piece
    from ..options import GenerationOptions

    defaults = {
        k: getattr(args, k) for k in ("transition", "context") if getattr(args, k) is not None
    }
    if args.piece is not None and args.section:
        args.usage_error("give a piece file or --section, not both")
    if args.piece is not None:
        piece = read_piece(args.piece, defaults)
    elif args.section:
        sections = tuple(inline_section(s, n, defaults) for n, s in enumerate(args.section, 1))
        piece = Piece(sections, GenerationOptions())
    else:
        args.usage_error('give a piece file, or sections: --section "20: soft piano intro" ...')
    changes = {name: getattr(args, dest) for dest, name in SETTINGS.items()}
    piece = piece.with_settings(**{k: v for k, v in changes.items() if v is not None})
    if piece.options.seed is None:
        piece = piece.with_settings(seed=random.SystemRandom().randrange(2**31))
    piece.check()
    return dataclasses.replace(
        piece, options=GenerationOptions.of(piece.options, duration=piece.seconds)
    )


def piece_finishing(args: argparse.Namespace, piece: Any, path: Path) -> tuple[Any, FinishOptions]:
    """The piece with its sections' texts hinted as `generate` hints a prompt (--bpm, --key),
    and the finishing the whole piece takes: the shared tempo, key, loop and level flags with
    the piece's fades, checked against the piece and the file before the model loads."""
    from ..finishing.prompts import hinted_prompt

    finish = FinishOptions(
        bpm=args.bpm, key=args.key, conform_key=args.conform_key, loop=args.loop,
        fade_in=piece.fade_in, fade_out=piece.fade_out, normalize=args.normalize or "loudness",
    )  # fmt: skip
    check_finishing(finish, [path])
    finish.check_fits(piece.seconds)
    sections = tuple(
        dataclasses.replace(s, text=hinted_prompt(s.text, finish) or s.text) for s in piece.sections
    )
    return dataclasses.replace(piece, sections=sections), finish


def check_output(args: argparse.Namespace) -> Path:
    """The one file `compose` writes, checked writable."""
    from ..audio.files import check_writable

    if args.output == "-":
        raise InvalidOptionError("compose writes a file: give -o NAME.wav (or .flac, .mp3, .ogg)")
    path = Path(output_with_format(args.output, args.format))
    check_writable(path)
    return path


def compose_to_file(
    model: Any, piece: Any, args: argparse.Namespace, path: Path, finish: FinishOptions
) -> float:
    """Make the piece under a progress bar naming its sections, decode it, finish it (tempo,
    key, loop, fades, level: `finish`) and write it; on Ctrl-C, write what was made so far
    (faded in and levelled only)."""
    import torch

    blocks: list[torch.Tensor] = []
    interrupted = False
    with model.compose_token_stream(piece.sections, piece.options, progress=True) as stream:
        try:
            for block in stream:
                blocks.append(block)
        except KeyboardInterrupt:
            interrupted = True
    codes = torch.cat(blocks, dim=2)
    if codes.shape[-1] == 0:
        raise KeyboardInterrupt
    seconds = codes.shape[-1] / model.frame_rate
    wav = model.decode(codes)
    if interrupted:
        fade_in = piece.fade_in if piece.fade_in < seconds else 0.0
        finish = FinishOptions(fade_in=fade_in, normalize=finish.normalize)
    write_piece(model, piece, stream.plan, args, path, wav[0], codes.shape[-1], finish)
    if interrupted:
        say(f"interrupted: kept the {seconds:.1f} s made so far")
        raise KeyboardInterrupt
    return seconds


def write_piece(
    model: Any,
    piece: Any,
    plan: Any,
    args: argparse.Namespace,
    path: Path,
    wav: Any,
    frames: int,
    finish: FinishOptions,
) -> None:
    """Finish, tag and write the piece [C, N]: the tags name each section made (its start in
    the piece as composed, before any tempo stretch, its length, text and own settings), the
    piece's settings, seed, fades and model, and what finishing measured and did."""
    from ..jobs.batch import clip_tags, save_clip
    from ..jobs.prompts_file import options_record

    made = [s for s in plan.sections if s.start < frames]
    sections = [
        {"start": round(s.start / model.frame_rate, 3), "seconds": s.section.seconds,
         "text": s.section.text, "transition": s.section.transition,
         **({"context": s.section.context} if s.section.context is not None else {}),
         **s.section.overrides()}
        for s in made
    ]  # fmt: skip
    title = piece.title or " / ".join(s["text"] for s in sections)
    settings = {**options_record(piece.options, piece.options.seed), **(finish.record() or {})}
    tags = clip_tags(
        title, model.name, settings, sections=sections,
        fade_in=finish.fade_in, fade_out=finish.fade_out,
        **({"piece": str(args.piece)} if args.piece else {}),
    )  # fmt: skip
    report = save_clip(
        path, wav, model.sample_rate, normalize=finish.normalize,
        subtype=wav_subtype(path, args.wav_subtype), tags=tags, plot=args.plot, finish=finish,
    )  # fmt: skip
    for note in report.notes:
        say(f"{path}: {note}")
