"""The `tunesmith` command: parse, then hand over to the command's module. Heavy imports
(torch, the model) happen inside the commands, so `tunesmith --help` is instant."""

from __future__ import annotations

import argparse
import os
import select
import signal
import sys
from typing import NoReturn

from .. import __version__
from ..errors import TunesmithError
from . import batch, compose, conform, generate, models, serve, train

# The status of a program whose output pipe was closed (`| head`): killed by SIGPIPE, as a
# shell reports it.
PIPE_ENDED = 128 + getattr(signal, "SIGPIPE", 13)


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line, like every other error the CLI reports."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"tunesmith: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="tunesmith", description="Text to music with MusicGen, in plain PyTorch.")
    parser.add_argument("--version", action="version", version=f"tunesmith {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for command in (generate, compose, conform, serve, batch, train, models):
        command.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit status. A reader of stdout that stops early (`| head`) ends
    the command quietly, as it ends Unix tools."""
    try:
        try:
            code = _run(argv)
        except SystemExit:  # --help, --version and usage errors: their text is out first
            sys.stdout.flush()
            raise
        sys.stdout.flush()  # here, not at exit, where a closed pipe is a traceback
        return code
    except BrokenPipeError:
        if not stdout_closed():
            raise
        # Whatever is still buffered for stdout goes nowhere (Python's docs, "Note on SIGPIPE").
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return PIPE_ENDED


def _run(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.run(args) or 0)
    except TunesmithError as err:
        for line in str(err).splitlines():  # one line, or one per item of a list
            print(f"tunesmith: error: {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tunesmith: interrupted", file=sys.stderr)
        return 130


def stdout_closed() -> bool:
    """Whether stdout is a pipe its reader has closed (a broken pipe elsewhere, a socket, is
    a real error). Where poll cannot tell, assume it is."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        events = poller.poll(0)
    except (AttributeError, OSError, ValueError):
        return True
    return any(mask & (select.POLLERR | select.POLLHUP) for _, mask in events)
