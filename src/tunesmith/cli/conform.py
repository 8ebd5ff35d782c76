"""`tunesmith conform IN -o OUT`: an existing audio file (a recording, an earlier generation)
brought to a tempo and key, cut into a seamless loop, faded, levelled: the finishing that
`generate` applies, with no model at all. Everything is checked before any audio is written.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .. import __version__
from ..errors import InvalidOptionError
from .arguments import (
    add_output_arguments,
    check_finishing,
    check_plot,
    finish_options,
    output_with_format,
    say,
    wav_subtype,
)


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `conform` subcommand."""
    conform = commands.add_parser(
        "conform",
        help="bring an audio file to a tempo and key, loop it, fade it",
        description=(
            "Finish an existing audio file as generate finishes its output: stretch to --bpm, "
            "detect (and with --conform-key shift to) --key, cut a seamless --loop, fade, level."
        ),
    )
    conform.add_argument("input", metavar="IN", help="audio file (wav, flac, mp3, ogg, ...)")
    conform.add_argument(
        "-o", "--output", required=True, help="output file (.wav, .flac, .ogg, .mp3)"
    )
    add_output_arguments(conform)
    conform.set_defaults(run=run_conform)


def run_conform(args: argparse.Namespace) -> int:
    """Check, read, finish, write, say what was done."""
    from ..audio.files import check_writable, read_audio
    from ..finishing.files import write_finished
    from ..finishing.pipeline import finish

    options = finish_options(args)
    source = Path(args.input)
    if not source.is_file():
        raise InvalidOptionError(f"input file {args.input!r} does not exist")
    output = Path(output_with_format(args.output, args.format))
    if output.resolve() == source.resolve():
        raise InvalidOptionError("-o names the input file: write the result to another file")
    check_writable(output)
    check_plot(args)
    check_finishing(options, [output])
    import soundfile as sf

    wav = read_audio(source)  # an unreadable file says so in one line
    rate = sf.info(str(source)).samplerate
    options.check_fits(wav.shape[-1] / rate)
    start = time.perf_counter()
    done = finish(wav, rate, options)
    tags = {
        "title": source.stem,
        "software": f"tunesmith {__version__}",
        "comment": json.dumps({"conform": source.name, "tunesmith": __version__}),
    }
    write_finished(output, done, rate, wav_subtype(output, args.wav_subtype), tags)
    if args.plot:
        from ..audio.spectrogram import plot_spectrogram, png_path

        plot_spectrogram(done.audio, rate, png_path(output), title=source.stem)
    for note in done.report.notes:
        say(f"{output}: {note}")
    seconds = done.audio.shape[-1] / rate
    say(f"wrote {output} ({seconds:.3f} s at {rate} Hz) in {time.perf_counter() - start:.1f} s")
    return 0
