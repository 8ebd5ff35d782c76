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
    parser.add_argument(
        "--adapter",
        action="append",
        default=None,
        metavar="PATH",
        help="also describe this LoRA adapter folder (rank, layers, base model); repeatable",
    )
    parser.set_defaults(run=run_models)


def adapter_rows(paths: list[str]) -> list[dict[str, Any]]:
    """What each adapter folder holds, read and checked as loading would."""
    from ..checkpoints.adapters import read_adapter

    rows = []
    for path in paths:
        adapter = read_adapter(path)
        info = adapter.describe()
        del info["scale"]
        rows.append({**info, "base_model": adapter.base_model})
    return rows


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
    adapters = adapter_rows(args.adapter or [])
    if args.json:
        json.dump(
            {"models": table, "adapters": adapters} if args.adapter else table, sys.stdout, indent=2
        )
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
    for a in adapters:
        print(
            f"adapter {a['path']}: LoRA rank {a['rank']} on {a['layers']} layers, "
            f"made for {a['base_model'] or 'an unnamed model'}"
        )
    return 0
