"""What the commands share: the model, sampling and output arguments (their defaults read from
`tunesmith.options`), checks made before any model is loaded, loading, and status lines.

Status lines go to stderr, unbuffered: stdout carries data (raw PCM with `-o -`, the table of
`tunesmith models`) or nothing, so `> log` and pipes see only what they asked for.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import InvalidOptionError
from ..finishing.options import MAX_BPM, MIN_BPM, FinishOptions
from ..options import (
    AUDIO_FORMATS,
    BOUNDS,
    DEFAULT_MODEL,
    DEFAULTS,
    NORMALIZE_MODES,
    QUANTIZE_MODES,
    WAV_SUBTYPES,
    GenerationOptions,
    audio_extension,
    check_quantize,
)


def say(message: str) -> None:
    """A status line for the person at the terminal (stderr, at once)."""
    print(message, file=sys.stderr, flush=True)


def quantize_mode(text: str) -> str | None:
    """--quantize's value, checked as `from_pretrained` would (a withheld format says why)."""
    try:
        return check_quantize(text)
    except InvalidOptionError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --device, --threads, --quantize, --compile, --text-encoder."""
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"hub id or local folder (default {DEFAULT_MODEL})"
    )
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps"
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument(
        "--quantize",
        type=quantize_mode,
        metavar="{" + ",".join(QUANTIZE_MODES) + "}",
        default=None,
        help="int8 weights for the decoder and T5 (less memory; faster on CPU)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="GPU: compile the step into a CUDA graph (~45 s on first use); CPU: only where "
        "tunesmith's C++ kernels cannot be built, torch.compile the step (30-60 s)",
    )
    parser.add_argument(
        "--text-encoder",
        default=None,
        metavar="T5",
        help="audiocraft checkpoints only: hub id or folder of the T5 text encoder (default t5-base)",
    )
    add_adapter_arguments(parser)


def add_adapter_arguments(parser: argparse.ArgumentParser) -> None:
    """--adapter (repeatable) and --adapter-scale."""
    parser.add_argument(
        "--adapter",
        action="append",
        default=None,
        metavar="PATH",
        help="a LoRA adapter folder (PEFT format, e.g. from tunesmith train) merged into the "
        "weights at load; repeat for several",
    )
    parser.add_argument(
        "--adapter-scale",
        action="append",
        type=float,
        default=None,
        metavar="S",
        help="how strongly each adapter applies (default 1; one for all, or one per --adapter)",
    )


def check_adapters(args: argparse.Namespace) -> None:
    """The adapters exist and can be read, before the model loads."""
    from ..checkpoints.adapters import read_adapters

    read_adapters(args.adapter or [], args.adapter_scale or [])


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    """The fields of GenerationOptions, with its defaults."""
    d = DEFAULTS
    parser.add_argument(
        "--duration",
        type=float,
        default=d.duration,
        help=f"seconds of new music, in {BOUNDS['duration']} (default {d.duration:g}; past 30 s "
        "the window slides)",
    )
    parser.add_argument(
        "--seed", type=int, default=d.seed, help="random seed: the same seed gives the same music"
    )
    parser.add_argument(
        "--top-k",
        type=int,
        default=d.top_k,
        help=f"sample from the k likeliest tokens, in {BOUNDS['top_k']} (1 = greedy, 0 = off; "
        f"default {d.top_k})",
    )
    parser.add_argument(
        "--top-p",
        type=float,
        default=d.top_p,
        help=f"nucleus sampling threshold, in {BOUNDS['top_p']} (0 = off; default {d.top_p:g})",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=d.temperature,
        help=f"softmax temperature, in {BOUNDS['temperature']} (default {d.temperature:g})",
    )
    parser.add_argument(
        "--cfg",
        type=float,
        default=d.cfg_scale,
        help=f"classifier-free guidance scale, in {BOUNDS['cfg_scale']} (1 = none; "
        f"default {d.cfg_scale:g})",
    )
    parser.add_argument(
        "--stride",
        type=float,
        default=d.stride,
        help=f"long form: seconds each new window adds, in {BOUNDS['stride']} "
        f"(default {d.stride:g})",
    )


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """--format, --wav-subtype, --normalize, --plot."""
    parser.add_argument(
        "--format",
        choices=AUDIO_FORMATS,
        default=None,
        help="audio format (default: the extension)",
    )
    parser.add_argument(
        "--wav-subtype", choices=WAV_SUBTYPES, default=None, help="WAV samples (default PCM_16)"
    )
    parser.add_argument(
        "--normalize",
        choices=NORMALIZE_MODES,
        default=None,
        help="level: loudness (-14 LUFS, default), peak (-1 dBFS), rms (-18 dBFS), none",
    )
    parser.add_argument(
        "--plot", action="store_true", help="also write a spectrogram PNG beside each file"
    )
    add_finishing_arguments(parser)


def add_finishing_arguments(parser: argparse.ArgumentParser) -> None:
    """--bpm, --key, --conform-key, --loop, --fade-in, --fade-out: `FinishOptions`' fields."""
    group = parser.add_argument_group("tempo, key, loops and fades (applied before the level)")
    group.add_argument(
        "--bpm", type=float, default=None, metavar="N",
        help=f'tempo ({MIN_BPM:g}-{MAX_BPM:g}): "N bpm" joins the text, then the audio is '
        "measured and stretched to exactly N BPM",
    )  # fmt: skip
    group.add_argument(
        "--key", default=None, metavar="KEY",
        help='key, e.g. "A minor" or F#: joins the text; the key is detected and reported',
    )  # fmt: skip
    group.add_argument(
        "--conform-key", action="store_true",
        help="also pitch-shift to --key (at most 6 semitones either way)",
    )  # fmt: skip
    group.add_argument(
        "--loop", type=int, default=None, metavar="BARS",
        help="cut a seamless loop of BARS 4/4 bars on a beat (wav, flac, ogg: loop points inside)",
    )  # fmt: skip
    group.add_argument(
        "--fade-in", type=float, default=0.0, metavar="S", help="equal-power fade-in, seconds"
    )
    group.add_argument(
        "--fade-out", type=float, default=0.0, metavar="S", help="equal-power fade-out, seconds"
    )


def finish_options(args: argparse.Namespace) -> FinishOptions:
    """The output arguments as one validated `FinishOptions` (before any model work)."""
    return FinishOptions(
        bpm=args.bpm, key=args.key, conform_key=args.conform_key, loop=args.loop,
        fade_in=args.fade_in, fade_out=args.fade_out, normalize=args.normalize or "loudness",
    )  # fmt: skip


def check_finishing(options: FinishOptions, paths: list[Path]) -> None:
    """What finishing will need is installed, and each output file can carry a loop."""
    from ..audio.tempo import require
    from ..finishing.files import check_output_format

    for path in paths:
        check_output_format(path, options)
    if options.bpm is not None or options.loop is not None:
        require("librosa")
    if options.bpm is not None or options.conform_key:
        require("pedalboard")
    if options.loop is not None and any(p.suffix.lower() in (".flac", ".ogg") for p in paths):
        require("mutagen")


def generation_options(args: argparse.Namespace) -> GenerationOptions:
    """The sampling arguments as one validated GenerationOptions (before any model work): its
    checks (options.BOUNDS) are the ones the HTTP API makes."""
    return GenerationOptions(
        duration=args.duration, top_k=args.top_k, top_p=args.top_p,
        temperature=args.temperature, cfg_scale=args.cfg, seed=args.seed, stride=args.stride,
    )  # fmt: skip


def check_machine(args: argparse.Namespace) -> None:
    """--device names a device this machine has; --threads, if given, is at least 1."""
    from ..engine.devices import resolve_device

    resolve_device(args.device)
    if getattr(args, "adapter", None) or getattr(args, "adapter_scale", None):
        check_adapters(args)
    if args.threads is not None and args.threads < 1:
        raise InvalidOptionError(f"--threads must be at least 1, got {args.threads}")


def check_model_argument(name: str) -> None:
    from ..checkpoints.hub import looks_like_path

    if looks_like_path(name) and not Path(name).expanduser().is_dir():
        raise InvalidOptionError(f"model folder {name!r} does not exist")


def check_plot(args: argparse.Namespace) -> None:
    if getattr(args, "plot", False):
        from ..audio.spectrogram import require_matplotlib

        require_matplotlib()


def check_audio_input(flag: str, path: str) -> None:
    """An input audio file (--continue, --melody) exists and can be read, before loading."""
    from ..audio.files import read_audio

    if not Path(path).is_file():
        raise InvalidOptionError(f"{flag} file {path!r} does not exist")
    read_audio(path)


def set_threads(args: argparse.Namespace) -> None:
    """--threads, if given, as torch's thread count."""
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)


def load(args: argparse.Namespace) -> Any:
    """Set threads, load the model, say how long it took."""
    from ..musicgen import MusicGen

    set_threads(args)
    start = time.perf_counter()
    model = MusicGen.from_pretrained(
        args.model,
        device=args.device,
        quantize=args.quantize,
        text_encoder=args.text_encoder,
        compile=args.compile,
        adapter=args.adapter,
        adapter_scale=args.adapter_scale,
    )
    adapters = f" with {len(model.adapters)} adapter(s)" if model.adapters else ""
    say(f"loaded {args.model}{adapters} on {model.device} in {time.perf_counter() - start:.1f} s")
    return model


def model_label(name: str) -> str:
    """A local folder as an absolute path (a manifest may be used from elsewhere)."""
    from ..checkpoints.hub import looks_like_path

    return str(Path(name).expanduser().resolve()) if looks_like_path(name) else name


def output_paths(output: str, count: int) -> list[Path]:
    """One prompt writes OUTPUT itself; several write OUTPUT-1, OUTPUT-2, ... beside it."""
    path = Path(output)
    if count == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{i}{path.suffix}") for i in range(1, count + 1)]


def output_with_format(output: str, fmt: str | None) -> str:
    """OUTPUT with its format's extension: --format's (default wav) added where it has none.
    An extension tunesmith does not write, or one that clashes with --format, is an error."""
    suffix = audio_extension(output)
    if not suffix and not Path(output).is_dir():  # a folder: check_writable says so
        return f"{output}.{fmt or AUDIO_FORMATS[0]}"
    if fmt is None or suffix == fmt:
        return output
    raise InvalidOptionError(f"output {output!r} does not end in .{fmt} (--format {fmt})")


def wav_subtype(path: Path | str, subtype: str | None) -> str | None:
    """--wav-subtype applies to WAV files only."""
    suffix = Path(path).suffix.lower()
    return subtype if suffix in ("", ".wav") else None
