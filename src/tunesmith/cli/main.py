"""The `tunesmith` command: parse, validate, call the public API. Heavy imports (torch, the
model) happen inside the commands, so `tunesmith --help` is instant."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from .. import __version__
from ..errors import InvalidOptionError, TunesmithError
from .batch import add_generate_options, finish_generate_outputs, register
from .models import register as register_models

DEFAULT_MODEL = "facebook/musicgen-small"


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line, like every other error the CLI reports."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"tunesmith: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="tunesmith", description="Text to music with MusicGen, in plain PyTorch.")
    parser.add_argument("--version", action="version", version=f"tunesmith {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    gen = commands.add_parser(
        "generate",
        help="generate music from text prompts",
        description="Generate one audio file per prompt (several prompts run as one batch).",
    )
    gen.add_argument(
        "prompts", nargs="+", metavar="PROMPT", help='text prompt ("" = unconditional)'
    )
    gen.add_argument(
        "-o",
        "--output",
        required=True,
        help="output file (.wav, .flac, .mp3, .ogg); - = raw PCM to stdout with --stream",
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
    gen.set_defaults(run=run_generate)
    add_generate_options(gen)
    srv = commands.add_parser(
        "serve",
        help="serve the HTTP API and web page",
        description="Load the model once and serve a JSON API (docs at /docs) and a web page at /.",
    )
    add_model_arguments(srv)
    srv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    srv.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    srv.add_argument("--data-dir", default="tunesmith-data", help="jobs database and audio files")
    srv.add_argument(
        "--api-key",
        default=None,
        help="require this key (or $TUNESMITH_API_KEY); needed off loopback",
    )
    srv.add_argument(
        "--max-queue", type=int, default=16, help="queued jobs before 429 (default 16)"
    )
    srv.add_argument(
        "--max-batch", type=int, default=4, help="jobs run together in one batch (default 4)"
    )
    srv.set_defaults(run=run_serve)
    register(commands)
    register_models(commands)
    return parser


def run_serve(args: argparse.Namespace) -> int:
    check_machine(args)
    check_model_argument(args.model)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    try:
        from ..server import serve
    except ImportError as err:
        raise InvalidOptionError(
            f"the server needs its extras ({err.name} is missing): pip install 'tunesmith[server]'"
        ) from None
    serve(
        args.model,
        args.host,
        args.port,
        Path(args.data_dir),
        args.api_key,
        args.device,
        args.max_queue,
        args.max_batch,
        quantize=args.quantize,
        text_encoder=args.text_encoder,
        compile=args.compile,
    )
    return 0


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"hub id or local folder (default {DEFAULT_MODEL})"
    )
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps"
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument(
        "--quantize", choices=["int8"], default=None, help="int8 decoder weights (faster on CPU)"
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


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--duration",
        type=float,
        default=8.0,
        help="seconds of new music (default 8; past 30 s the window slides)",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="random seed: the same seed gives the same music"
    )
    parser.add_argument(
        "--top-k",
        type=int,
        default=250,
        help="sample from the k likeliest tokens (1 = greedy; default 250)",
    )
    parser.add_argument(
        "--top-p", type=float, default=0.0, help="nucleus sampling threshold (0 = off, default)"
    )
    parser.add_argument(
        "--temperature", type=float, default=1.0, help="softmax temperature (> 0, default 1.0)"
    )
    parser.add_argument(
        "--cfg", type=float, default=3.0, help="classifier-free guidance scale (default 3.0)"
    )
    parser.add_argument(
        "--stride",
        type=float,
        default=18.0,
        help="long form: seconds each new window adds (default 18)",
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.run(args) or 0)
    except TunesmithError as err:
        print(f"tunesmith: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tunesmith: interrupted", file=sys.stderr)
        return 130


def sampling_options(args: argparse.Namespace) -> dict[str, Any]:
    """The generation keyword arguments, validated before any model work."""
    from ..options import MAX_DURATION, GenerationOptions

    kwargs = dict(
        top_k=args.top_k,
        top_p=args.top_p,
        temperature=args.temperature,
        cfg_scale=args.cfg,
        seed=args.seed,
        stride=args.stride,
    )
    GenerationOptions(duration=args.duration, **kwargs).validate(max_duration=MAX_DURATION)
    if args.stride > 30.0:
        raise InvalidOptionError(f"stride {args.stride:g}s is longer than the 30s window")
    return kwargs


def check_machine(args: argparse.Namespace) -> None:
    """--device names a device this machine has; --threads, if given, is at least 1."""
    from ..engine.devices import resolve_device

    resolve_device(args.device)
    if args.threads is not None and args.threads < 1:
        raise InvalidOptionError(f"--threads must be at least 1, got {args.threads}")


def check_model_argument(name: str) -> None:
    from ..checkpoints.loading import looks_like_path

    if looks_like_path(name) and not Path(name).expanduser().is_dir():
        raise InvalidOptionError(f"model folder {name!r} does not exist")


def output_paths(output: str, count: int) -> list[Path]:
    """One prompt writes OUTPUT itself; several write OUTPUT-1, OUTPUT-2, ... beside it."""
    path = Path(output)
    if count == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{i}{path.suffix}") for i in range(1, count + 1)]


def load(args: argparse.Namespace) -> Any:
    """Set threads, load the model, say how long it took."""
    import torch

    from ..musicgen import MusicGen

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model = MusicGen.from_pretrained(
        args.model,
        device=args.device,
        quantize=args.quantize,
        text_encoder=args.text_encoder,
        compile=args.compile,
    )
    say(args, f"loaded {args.model} on {model.device} in {time.perf_counter() - start:.1f} s")
    return model


def say(args: argparse.Namespace, message: str) -> None:
    """Report to stdout, or to stderr when stdout carries the audio."""
    to_stderr = getattr(args, "output", None) == "-"  # `batch` has no --output
    print(message, file=sys.stderr if to_stderr else sys.stdout, flush=True)


def run_generate(args: argparse.Namespace) -> int:
    from ..audio.files import check_writable, read_audio

    kwargs = sampling_options(args)
    check_machine(args)
    if not 0 < args.chunk <= 60:
        raise InvalidOptionError(f"--chunk must be in (0, 60] seconds, got {args.chunk}")
    to_stdout = args.output == "-"
    if to_stdout and (not args.stream or len(args.prompts) != 1):
        raise InvalidOptionError("-o - (raw PCM to stdout) needs --stream and a single prompt")
    paths = [] if to_stdout else output_paths(args.output, len(args.prompts))
    for path in paths:
        check_writable(path)
    check_model_argument(args.model)
    if args.continue_from is not None:
        if not Path(args.continue_from).is_file():
            raise InvalidOptionError(f"--continue file {args.continue_from!r} does not exist")
        read_audio(args.continue_from)  # fail on an unreadable file before loading the model
        kwargs.update(
            audio_prompt=args.continue_from, prompt_in_output=not args.no_prompt_in_output
        )

    if args.melody is not None:
        if not Path(args.melody).is_file():
            raise InvalidOptionError(f"--melody file {args.melody!r} does not exist")
        read_audio(args.melody)  # fail on an unreadable file before loading the model
        kwargs["melody"] = args.melody

    model = load(args)
    prompts = [p or None for p in args.prompts]
    start = time.perf_counter()
    if args.stream:
        seconds = stream_to_sinks(model, prompts, args, kwargs, paths)
    else:
        seconds = generate_to_files(model, prompts, args, kwargs, paths)
    took = time.perf_counter() - start
    for name in [str(p) for p in paths] or ["stdout"]:
        say(
            args,
            f"wrote {name} ({seconds:.1f} s of audio at {model.sample_rate} Hz) in {took:.1f} s",
        )
    return 0


def generate_to_files(
    model: Any,
    prompts: list[str | None],
    args: argparse.Namespace,
    kwargs: dict[str, Any],
    paths: list[Path],
) -> float:
    """Generate all prompts as one batch; on Ctrl-C, keep what was made so far."""
    import torch

    prompt_in_output = kwargs.pop("prompt_in_output", True)
    blocks: list[torch.Tensor] = []
    interrupted = False
    with model.token_stream(prompts, args.duration, progress=True, **kwargs) as stream:
        try:
            for block in stream:
                blocks.append(block)
        except KeyboardInterrupt:
            interrupted = True
    if stream.prompt is not None and prompt_in_output:
        blocks.insert(0, stream.prompt)
    codes = torch.cat(blocks, dim=2)
    if codes.shape[-1] == 0:
        raise KeyboardInterrupt
    wav = model.decode(codes)
    finish_generate_outputs(args, model, paths, wav)
    if interrupted:
        say(args, f"interrupted: kept the {codes.shape[-1] / model.frame_rate:.1f} s made so far")
        raise KeyboardInterrupt
    return float(codes.shape[-1] / model.frame_rate)


def stream_to_sinks(
    model: Any,
    prompts: list[str | None],
    args: argparse.Namespace,
    kwargs: dict[str, Any],
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
            prompts, args.duration, chunk_seconds=args.chunk, progress=True, **kwargs
        ):
            for sink, audio in zip(sinks, chunk, strict=True):
                sink.write(audio)
            samples += chunk.shape[-1]
    finally:
        for sink in sinks:
            sink.close()
    return samples / model.sample_rate
