"""The `tunesmith` command when the reader of its stdout goes away (`| head -c 600`): it stops
quietly with the status of a program the pipe ended (128 + SIGPIPE), as Unix tools do, with
no traceback. Real processes on real pipes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

PIPE_ENDED = 128 + signal.SIGPIPE


def run_into_closed_pipe(*argv: str) -> subprocess.CompletedProcess[bytes]:
    """`tunesmith ARGV` writing into a pipe nobody reads: its reader closed before it starts."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            [sys.executable, "-m", "tunesmith", *argv],
            stdout=write, stderr=subprocess.PIPE, timeout=300,
        )  # fmt: skip
    finally:
        os.close(write)


def run_into_head(count: int, *argv: str) -> tuple[bytes, int, bytes]:
    """`tunesmith ARGV | head -c COUNT`: what was read, the status, stderr."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tunesmith", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None and process.stderr is not None
    head = process.stdout.read(count)
    process.stdout.close()  # the reader stops
    err = process.stderr.read()
    return head, process.wait(timeout=300), err


def test_models_into_a_closed_pipe() -> None:
    for argv in (["models", "--json"], ["models"]):
        result = run_into_closed_pipe(*argv)
        assert result.stderr == b"", result.stderr.decode()  # no traceback, no message
        assert result.returncode == PIPE_ENDED


def test_a_stream_to_a_reader_that_stops(tiny_checkpoint: Path) -> None:
    """4 s of raw PCM (256 KB, past what a pipe holds) read for its first 1000 bytes."""
    argv = ["generate", "x", "--stream", "-o", "-", "--duration", "4", "--chunk", "0.5"]
    head, code, err = run_into_head(1000, *argv, "--seed", "1", "--model", str(tiny_checkpoint))
    assert len(head) == 1000
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()
    assert b"wrote stdout" not in err
    assert code == PIPE_ENDED
