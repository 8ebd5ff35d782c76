"""`tunesmith serve`: the HTTP API and web page over one loaded model (`tunesmith.server`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InvalidOptionError
from ..server.settings import LOG_FORMATS, ServiceSettings
from .arguments import (
    add_model_arguments,
    check_machine,
    check_model_argument,
    say,
    set_threads,
)


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `serve` subcommand."""
    srv = commands.add_parser(
        "serve",
        help="serve the HTTP API and web page",
        description="Load the model once and serve a JSON API (docs at /docs) and a web page at /.",
    )
    add_model_arguments(srv)
    d = ServiceSettings()  # every default, from the one place it is defined
    srv.add_argument("--host", default=d.host, help=f"address to bind (default {d.host})")
    srv.add_argument("--port", type=int, default=d.port, help=f"port (default {d.port})")
    srv.add_argument(
        "--data-dir",
        default=str(d.data_dir),
        help=f"jobs database, audio and uploads (default ./{d.data_dir}: a folder named so in "
        "the folder the server is started from, made if missing)",
    )
    keys = srv.add_argument_group("API keys (needed off loopback)")
    keys.add_argument(
        "--api-key",
        default=None,
        help="require this key (one admin key). Every user of the machine sees it in "
        "`ps`: prefer --api-key-file or $TUNESMITH_API_KEY",
    )
    keys.add_argument(
        "--api-key-file", default=None, metavar="FILE", help="read the one API key from FILE"
    )
    keys.add_argument(
        "--api-keys-file",
        default=None,
        metavar="FILE",
        help="several named keys, stored hashed: NAME ROLE(user|admin) sha256:HASH a line; "
        "each key sees only its own jobs and uploads, an admin key all",
    )
    keys.add_argument(
        "--add-key",
        default=None,
        metavar="NAME",
        help="add a new key NAME to --api-keys-file, print it once, and exit",
    )
    keys.add_argument("--admin", action="store_true", help="with --add-key: an admin key")
    srv.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a public name the server answers to besides loopback ones (repeatable); "
        "other Host headers get 421",
    )
    srv.add_argument(
        "--max-queue",
        type=int,
        default=d.max_queue,
        help=f"queued jobs before 429 (default {d.max_queue})",
    )
    srv.add_argument(
        "--max-batch",
        type=int,
        default=d.max_batch,
        help=f"jobs run together in one batch (default {d.max_batch})",
    )
    ops = srv.add_argument_group("operations")
    ops.add_argument(
        "--max-attempts",
        type=int,
        default=d.max_attempts,
        help=f"starts of a job across crashes before it fails (default {d.max_attempts})",
    )
    ops.add_argument(
        "--drain-seconds",
        type=float,
        default=d.drain_seconds,
        help=f"on SIGTERM, time the running batch has to finish (default {d.drain_seconds:g})",
    )
    ops.add_argument(
        "--min-free-mb",
        type=float,
        default=d.min_free_mb,
        help=f"no new jobs (507) below this free space in --data-dir (default {d.min_free_mb:g})",
    )
    ops.add_argument(
        "--keep-days",
        type=float,
        default=d.keep_days,
        help="delete finished jobs older than this (default: keep)",
    )
    ops.add_argument(
        "--max-disk-gb",
        type=float,
        default=d.max_disk_gb,
        help="delete the oldest finished jobs while their audio passes this",
    )
    ops.add_argument(
        "--request-timeout",
        type=float,
        default=d.request_timeout,
        help=f"seconds a request body may take to arrive (default {d.request_timeout:g})",
    )
    ops.add_argument(
        "--max-connections",
        type=int,
        default=d.max_connections,
        help=f"open connections before 503 (default {d.max_connections})",
    )
    ops.add_argument(
        "--log-format", choices=LOG_FORMATS, default=d.log_format,
        help="json: one JSON object a log line",
    )  # fmt: skip
    srv.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    if args.add_key is not None:
        return _add_key(args)
    if args.admin:
        raise InvalidOptionError("--admin goes with --add-key NAME")
    check_machine(args)
    check_model_argument(args.model)
    set_threads(args)
    try:
        from ..server import serve
    except ImportError as err:
        raise InvalidOptionError(
            f"the server needs its extras ({err.name} is missing): pip install 'tunesmith[server]'"
        ) from None
    from ..server.settings import read_api_key

    if args.api_key is not None:
        say("warning: --api-key is visible in `ps` to every user here; use --api-key-file")
    settings = ServiceSettings(
        host=args.host, port=args.port, data_dir=Path(args.data_dir),
        api_key=read_api_key(args.api_key, args.api_key_file),
        api_keys_file=None if args.api_keys_file is None else Path(args.api_keys_file),
        allowed_hosts=tuple(args.allowed_host), max_queue=args.max_queue,
        max_batch=args.max_batch, max_attempts=args.max_attempts,
        drain_seconds=args.drain_seconds, min_free_mb=args.min_free_mb,
        keep_days=args.keep_days, max_disk_gb=args.max_disk_gb,
        request_timeout=args.request_timeout, max_connections=args.max_connections,
        log_format=args.log_format,
    )  # fmt: skip
    load = {
        "device": args.device, "quantize": args.quantize, "text_encoder": args.text_encoder,
        "compile": args.compile, "adapter": args.adapter, "adapter_scale": args.adapter_scale,
    }  # fmt: skip
    serve(args.model, settings, load)
    return 0


def _add_key(args: argparse.Namespace) -> int:
    """--add-key NAME: a new key in the keys file, printed once (only its hash is kept)."""
    from ..server.keys import add_key

    if args.api_keys_file is None:
        raise InvalidOptionError("--add-key NAME needs --api-keys-file FILE to add it to")
    key = add_key(args.api_keys_file, args.add_key, admin=args.admin)
    role = "admin" if args.admin else "user"
    say(f"added {role} key {args.add_key!r} to {args.api_keys_file} (only its hash is kept there)")
    print(key)
    return 0
