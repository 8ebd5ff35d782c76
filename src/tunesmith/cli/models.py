"""`tunesmith models`: the known checkpoints, their sizes and memory needs, which are in the
local Hugging Face cache, and the licence of each. Works offline."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..checkpoints.catalog import (
    CC_BY_NC,
    CC_BY_NC_URL,
    CHECKPOINTS,
    cache_status,
    human_bytes,
    human_count,
)

COLUMNS = ("model", "params", "download", "RAM (CPU fp32)", "GPU (fp16)", "cached", "licence")


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `models` subcommand to the `tunesmith` parser's subcommands."""
    parser = commands.add_parser(
        "models",
        help="list the known MusicGen checkpoints, their sizes, cache status and licence",
        description=(
            "The official MusicGen checkpoints: parameters, download size, memory to run one "
            "prompt (weights + KV cache for a 30 s window), whether they are in the local "
            "Hugging Face cache, and their licence. Reads only the local cache."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print the table as JSON")
    parser.set_defaults(run=run_models)


def rows() -> list[dict[str, Any]]:
    """One dict per known checkpoint (the table `tunesmith models` prints)."""
    return [
        {
            "model": c.repo_id,
            "params": c.params,
            "download_bytes": c.download_bytes,
            "cpu_bytes": c.cpu_bytes,
            "gpu_bytes": c.gpu_bytes,
            "cached": cache_status(c.repo_id),
            "licence": c.licence,
            "status": c.status,
        }
        for c in CHECKPOINTS
    ]


def run_models(args: argparse.Namespace) -> int:
    table = rows()
    if args.json:
        json.dump(table, sys.stdout, indent=2)
        print()
        return 0
    cells = [COLUMNS] + [
        (
            r["model"] + (" *" if "melody" in r["model"] else ""),
            human_count(r["params"]),
            human_bytes(r["download_bytes"]),
            human_bytes(r["cpu_bytes"]),
            human_bytes(r["gpu_bytes"]),
            r["cached"],
            r["licence"],
        )
        for r in table
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    for row in cells:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print()
    print(
        "* melody checkpoints: hub layout only; the melody's chroma is taken from the whole "
        "mix (audiocraft first removes drums and bass with Demucs)."
    )
    print(
        "Memory: weights plus the KV cache of one prompt (with CFG) over a 30 s window; "
        "GPU figures use a float16 decoder."
    )
    print(
        f"Licence: the official MusicGen weights are {CC_BY_NC} (non-commercial use only, "
        f"{CC_BY_NC_URL}); tunesmith's code is MIT."
    )
    return 0
