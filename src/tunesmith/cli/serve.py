"""`tunesmith serve`: the HTTP API and web page over one loaded model (`tunesmith.server`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InvalidOptionError
from .arguments import add_model_arguments, check_machine, check_model_argument


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `serve` subcommand."""
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
        adapters=tuple(args.adapter or ()),
        adapter_scales=tuple(args.adapter_scale or ()),
    )
    return 0
