"""Where a fine-tuning run keeps its files, all under one output folder DIR:

DIR/codes/         the code cache (one file per audio file)
DIR/state/         settings.json and last.pt: what --resume continues from
DIR/adapter/       the LoRA adapter in PEFT's format (LoRA runs)
DIR/model/         the whole checkpoint in the hub layout (--full runs)
DIR/train.jsonl    one line per optimizer step (and per validation)
DIR/loss.png       training and validation loss
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..audio.files import probe_write
from ..errors import TrainingDataError


@dataclass(frozen=True)
class RunFiles:
    root: Path

    @property
    def codes(self) -> Path:
        return self.root / "codes"

    @property
    def state(self) -> Path:
        return self.root / "state" / "last.pt"

    @property
    def settings(self) -> Path:
        return self.root / "state" / "settings.json"

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def log(self) -> Path:
        return self.root / "train.jsonl"

    @property
    def plot(self) -> Path:
        return self.root / "loss.png"

    def log_line(self, record: dict[str, Any]) -> None:
        with self.log.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def read_log(self) -> list[dict[str, Any]]:
        if not self.log.is_file():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]


def prepare(out: str | Path) -> RunFiles:
    """Create DIR (and its state folder) and prove a file can be written there, before any
    long work."""
    root = Path(out).expanduser()
    try:
        (root / "state").mkdir(parents=True, exist_ok=True)
        probe_write(root)
    except OSError as err:
        raise TrainingDataError(
            f"cannot write to output folder {str(out)!r}: {err.strerror or err}"
        ) from None
    return RunFiles(root)
