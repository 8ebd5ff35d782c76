"""The `tunesmith` command: parse, then hand over to the command's module. Heavy imports
(torch, the model) happen inside the commands, so `tunesmith --help` is instant."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from .. import __version__
from ..errors import TunesmithError
from . import batch, compose, generate, models, serve, train


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line, like every other error the CLI reports."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"tunesmith: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="tunesmith", description="Text to music with MusicGen, in plain PyTorch.")
    parser.add_argument("--version", action="version", version=f"tunesmith {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for command in (generate, compose, serve, batch, train, models):
        command.register(commands)
    return parser


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
