"""`tunesmith generate`: one audio file per prompt (several prompts run as one batch), or a
stream; `--from-manifest` makes a batch job's clip again (`again.py`).

Everything the command line can get wrong is refused before the model loads.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path
from typing import Any

from ..errors import InvalidOptionError
from ..finishing.options import FinishOptions
from ..finishing.prompts import hinted_prompt
from ..options import GenerationOptions
from .arguments import (
    add_model_arguments,
    add_output_arguments,
    add_sampling_arguments,
    check_audio_input,
    check_finishing,
    check_machine,
    check_model_argument,
    check_plot,
    finish_options,
    generation_options,
    load,
    output_paths,
    output_with_format,
    say,
    wav_subtype,
)


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `generate` subcommand."""
    gen = commands.add_parser(
        "generate",
        help="generate music from text prompts",
        description="Generate one audio file per prompt (several prompts run as one batch).",
    )
    gen.add_argument(
        "prompts", nargs="*", metavar="PROMPT", help='text prompt ("" = unconditional)'
    )
    gen.add_argument(
        "-o",
        "--output",
        required=True,
        help="output file (.wav, .flac, .mp3, .ogg); - = raw 16-bit PCM to stdout with --stream",
    )
    add_model_arguments(gen)
    add_sampling_arguments(gen)
    gen.add_argument(
        "--continue",
        dest="continue_from",
        metavar="FILE",
        help="audio file to continue (any rate and channels)",
    )
    gen.add_argument(
        "--no-prompt-in-output",
        action="store_true",
        help="with --continue: leave the prompt audio out of the output",
    )
    gen.add_argument(
        "--melody",
        metavar="FILE",
        help="melody checkpoints: audio file whose melody (chroma) the music follows",
    )
    gen.add_argument(
        "--stream",
        action="store_true",
        help="write audio as it is made (a WAV valid at every moment)",
    )
    gen.add_argument(
        "--chunk", type=float, default=1.0, help="seconds per streamed chunk (default 1.0)"
    )
    add_output_arguments(gen)
    gen.add_argument(
        "--from-manifest",
        metavar="MANIFEST",
        help="regenerate a batch clip exactly (its prompt, seed, settings and model)",
    )
    gen.add_argument("--row", type=int, default=None, help="with --from-manifest: the row")
    gen.set_defaults(run=run_generate, usage_error=gen.error)


def run_generate(args: argparse.Namespace) -> int:
    """Check everything, load the model, generate, write, say what was written."""
    if args.from_manifest is not None:
        from .again import run_from_manifest

        return run_from_manifest(args)
    if args.row is not None:
        args.usage_error("--row needs --from-manifest MANIFEST")
    if not args.prompts:
        args.usage_error("the following arguments are required: PROMPT")
    if args.seed is None:  # drawn here, so that the file's tags can name it
        args.seed = random.SystemRandom().randrange(2**31)
    options = generation_options(args)
    finish = finish_options(args)
    check_machine(args)
    paths = _check_outputs(args)
    if args.stream and finish.changes_audio:
        raise InvalidOptionError(
            "--bpm, --key, --loop and fades need the whole clip: leave them out with --stream"
        )
    check_finishing(finish, paths)
    finish.check_fits(options.duration)
    check_model_argument(args.model)
    inputs: dict[str, Any] = {}
    if args.continue_from is not None:
        check_audio_input("--continue", args.continue_from)
        _check_continuation(args)
        inputs["audio_prompt"] = args.continue_from
    if args.melody is not None:
        check_audio_input("--melody", args.melody)
        _check_melody_model(args)
        inputs["melody"] = args.melody

    model = load(args)
    prompts = [hinted_prompt(p, finish) or None for p in args.prompts]
    start = time.perf_counter()
    if args.stream:
        seconds = stream_to_sinks(model, prompts, args, options, inputs, paths)
    else:
        seconds = generate_to_files(model, prompts, args, options, inputs, paths, finish)
    took = time.perf_counter() - start
    for name in [str(p) for p in paths] or ["stdout"]:
        say(f"wrote {name} ({seconds:.1f} s of audio at {model.sample_rate} Hz) in {took:.1f} s")
    return 0


def _check_outputs(args: argparse.Namespace) -> list[Path]:
    """The files `generate` will write, checked writable; [] for raw PCM on stdout."""
    from ..audio.files import check_writable

    if not 0 < args.chunk <= 60:
        raise InvalidOptionError(f"--chunk must be in (0, 60] seconds, got {args.chunk}")
    if args.stream and args.normalize not in (None, "none"):
        raise InvalidOptionError("--normalize needs the whole clip: leave it out with --stream")
    if args.stream and args.plot:
        raise InvalidOptionError("--plot needs the whole clip: leave it out with --stream")
    check_plot(args)
    if args.output == "-":
        if not args.stream or len(args.prompts) != 1:
            raise InvalidOptionError("-o - (raw PCM to stdout) needs --stream and a single prompt")
        if args.format is not None or args.wav_subtype is not None:
            given = "--format" if args.format is not None else "--wav-subtype"
            raise InvalidOptionError(
                f"-o - writes raw 16-bit PCM: {given} does not apply (write a file with -o NAME)"
            )
        return []
    args.output = output_with_format(args.output, args.format)
    if args.stream and Path(args.output).suffix.lower() not in ("", ".wav"):
        raise InvalidOptionError("--stream writes WAV files: give -o NAME.wav (or -o - for PCM)")
    paths = output_paths(args.output, len(args.prompts))
    for path in paths:
        check_writable(path)
    return paths


def _model_config(args: argparse.Namespace) -> Any:
    """The model's config (its config.json, not its weights): what some checks need before
    the model loads."""
    from ..checkpoints.hub import resolve_checkpoint
    from ..checkpoints.loading import read_config

    return read_config(resolve_checkpoint(args.model), args.text_encoder)


def _check_continuation(args: argparse.Namespace) -> None:
    """--continue's audio leaves room in the model's window (else generation would refuse it
    only once the model is loaded)."""
    import soundfile as sf

    config = _model_config(args)
    info = sf.info(args.continue_from)
    seconds = info.frames / info.samplerate
    codec = config.audio_encoder
    frame = codec.hop_length / codec.sampling_rate
    if seconds >= config.max_duration or seconds < frame:
        raise InvalidOptionError(
            f"--continue file {args.continue_from!r} is {seconds:.2f} s: it must be at least "
            f"one frame ({frame:.2f} s) and shorter than the model's {config.max_duration:g} s "
            "window"
        )


def _check_melody_model(args: argparse.Namespace) -> None:
    """--melody needs a melody checkpoint: read its config (not its weights) to know."""
    config = _model_config(args)
    if config.melody is None:
        raise InvalidOptionError(
            f"--melody needs a melody checkpoint (such as facebook/musicgen-melody); "
            f"{args.model} is conditioned on text only"
        )


def generate_to_files(
    model: Any,
    prompts: list[str | None],
    args: argparse.Namespace,
    options: GenerationOptions,
    inputs: dict[str, Any],
    paths: list[Path],
    finish: FinishOptions | None = None,
) -> float:
    """Generate all prompts as one batch; on Ctrl-C, keep what was made so far."""
    import torch

    blocks: list[torch.Tensor] = []
    interrupted = False
    with model.token_stream(prompts, options, progress=True, **inputs) as stream:
        try:
            for block in stream:
                blocks.append(block)
        except KeyboardInterrupt:
            interrupted = True
    if stream.prompt is not None and not args.no_prompt_in_output:
        blocks.insert(0, stream.prompt)
    codes = torch.cat(blocks, dim=2)
    if codes.shape[-1] == 0:
        raise KeyboardInterrupt
    wav = model.decode(codes)
    write_outputs(args, options, model, paths, wav, finish, prompts)
    if interrupted:
        say(f"interrupted: kept the {codes.shape[-1] / model.frame_rate:.1f} s made so far")
        raise KeyboardInterrupt
    return float(codes.shape[-1] / model.frame_rate)


def write_outputs(
    args: argparse.Namespace,
    options: GenerationOptions,
    model: Any,
    paths: list[Path],
    wav: Any,
    finish: FinishOptions | None = None,
    texts: list[str | None] | None = None,
) -> None:
    """Finish (tempo, key, loop, fades, level), tag (prompt, seed, model, settings, what
    finishing measured), write and optionally plot the clips: `wav` [B, C, N] for the B
    prompts, one file each; `texts` are the prompts as the model read them."""
    from ..jobs.batch import clip_tags, save_clip
    from ..jobs.prompts_file import options_record

    prompts = texts or [p or None for p in args.prompts]
    settings = {**options_record(options, options.seed), **((finish and finish.record()) or {})}
    for index, (path, audio) in enumerate(zip(paths, wav, strict=True)):
        extra: dict[str, Any] = {}
        if len(prompts) > 1:
            extra["batch"] = {"prompts": prompts, "index": index}
        if args.continue_from:
            extra["continue"] = str(args.continue_from)
        report = save_clip(
            Path(path), audio, model.sample_rate,
            normalize=args.normalize or "loudness", subtype=wav_subtype(path, args.wav_subtype),
            tags=clip_tags(prompts[index], model.name, settings, **extra), plot=args.plot,
            finish=finish,
        )  # fmt: skip
        for note in report.notes:
            say(f"{path}: {note}")


def stream_to_sinks(
    model: Any,
    prompts: list[str | None],
    args: argparse.Namespace,
    options: GenerationOptions,
    inputs: dict[str, Any],
    paths: list[Path],
) -> float:
    """Write audio chunk by chunk as it is made; the files are valid at every moment."""
    from ..audio.streaming_wav import AudioSink, ProgressiveWav, RawPcm

    channels = model.audio_channels
    sinks: list[AudioSink] = (
        [ProgressiveWav(os.fspath(p), model.sample_rate, channels) for p in paths]
        if paths
        else [RawPcm()]
    )
    samples = 0
    try:
        for chunk in model.stream(
            prompts, options, chunk_seconds=args.chunk, progress=True,
            prompt_in_output=not args.no_prompt_in_output, **inputs,
        ):  # fmt: skip
            for sink, audio in zip(sinks, chunk, strict=True):
                sink.write(audio)
            samples += chunk.shape[-1]
    finally:
        for sink in sinks:
            sink.close()
    return samples / model.sample_rate
