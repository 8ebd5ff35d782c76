"""A fine-tuning data set: audio files and their captions.

DATA is a folder of audio files, each captioned by a sidecar `NAME.txt` (the caption) or
`NAME.json` in audiocraft's style (`description`, and optional `genre`, `moods`, `keywords`,
`bpm`, `key`, folded into the text), or a `.csv` / `.jsonl` manifest with `path` and
`caption` (paths relative to the manifest's folder). A held-out share of the files (chosen by
a hash of their names, so a file never moves between the two sides) measures validation loss.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import TrainingDataError

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".aif", ".aiff")
MANIFEST_SUFFIXES = (".csv", ".jsonl")
MUSIC_INFO_FIELDS = ("genre", "moods", "keywords", "bpm", "key")  # audiocraft's MusicInfo


@dataclass(frozen=True)
class Example:
    """One audio file and its caption; `key` names it stably (its path within DATA)."""

    path: Path
    caption: str
    key: str


def find_examples(data: str | Path, default_caption: str | None = None) -> list[Example]:
    """Every captioned audio file DATA names, sorted; files without a caption are one error
    listing them (unless `default_caption`)."""
    root = Path(data).expanduser()
    if root.is_file() and root.suffix.lower() in MANIFEST_SUFFIXES:
        pairs = _read_manifest(root)
        base = root.parent
    elif root.is_dir():
        files = sorted(
            p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()
        )
        if not files:
            raise TrainingDataError(
                f"{data} holds no audio files ({', '.join(s[1:] for s in AUDIO_SUFFIXES)})"
            )
        pairs = [(p, _sidecar_caption(p)) for p in files]
        base = root
    elif root.exists():
        raise TrainingDataError(
            f"{data} is neither a folder of audio files nor a .csv / .jsonl manifest"
        )
    else:
        raise TrainingDataError(f"data {str(data)!r} does not exist")
    uncaptioned = [str(p) for p, caption in pairs if not caption]
    if uncaptioned and default_caption is None:
        shown = ", ".join(uncaptioned[:5]) + (", ..." if len(uncaptioned) > 5 else "")
        raise TrainingDataError(
            f"{len(uncaptioned)} of {len(pairs)} audio files have no caption ({shown}): give "
            "each a NAME.txt or NAME.json beside it, or pass --default-caption"
        )
    return [
        Example(path=p, caption=caption or str(default_caption), key=_key(p, base))
        for p, caption in pairs
    ]


def split(examples: list[Example], val_share: float) -> tuple[list[Example], list[Example]]:
    """(train, validation): each file's side fixed by a hash of its key; with a share above
    zero and at least two files, validation gets at least one file and training keeps one."""
    if not 0 <= val_share < 1:
        raise TrainingDataError(f"--val-share must be in [0, 1), got {val_share:g}")
    if val_share == 0 or len(examples) < 2:
        return list(examples), []
    ranked = sorted(examples, key=lambda e: _unit_hash(e.key))
    held = [e for e in ranked if _unit_hash(e.key) < val_share] or ranked[:1]
    held = held[: len(examples) - 1]
    keys = {e.key for e in held}
    return [e for e in examples if e.key not in keys], [e for e in examples if e.key in keys]


def fold_music_info(info: dict[str, object]) -> str:
    """audiocraft's JSON metadata as one caption: the description, then `field: value` for
    each of genre, moods, keywords, bpm, key that is set."""
    parts = [str(info.get("description") or "").strip()]
    for name in MUSIC_INFO_FIELDS:
        value = info.get(name)
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value if str(v).strip())
        if value not in (None, ""):
            parts.append(f"{name}: {value}")
    return ". ".join(p for p in parts if p)


def _sidecar_caption(audio: Path) -> str:
    text, meta = audio.with_suffix(".txt"), audio.with_suffix(".json")
    if text.is_file():
        return text.read_text(encoding="utf-8", errors="replace").strip()
    if meta.is_file():
        try:
            info = json.loads(meta.read_text(encoding="utf-8"))
        except ValueError as err:
            raise TrainingDataError(f"caption file {meta} is not valid JSON: {err}") from None
        if not isinstance(info, dict):
            raise TrainingDataError(f"caption file {meta} must hold a JSON object")
        return fold_music_info(info)
    return ""


def _read_manifest(path: Path) -> list[tuple[Path, str]]:
    rows: list[dict[str, object]] = []
    try:
        if path.suffix.lower() == ".csv":
            with path.open(newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
        else:
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise TrainingDataError(f"{path} line {number} is not a JSON object")
                    rows.append(row)
    except (ValueError, UnicodeDecodeError, csv.Error) as err:
        raise TrainingDataError(f"manifest {path} cannot be read: {err}") from None
    if not rows:
        raise TrainingDataError(f"manifest {path} names no audio files")
    if "path" not in rows[0]:
        raise TrainingDataError(f"manifest {path} needs a 'path' column (and 'caption')")
    pairs = []
    for row in rows:
        audio = Path(str(row.get("path") or "")).expanduser()
        audio = audio if audio.is_absolute() else path.parent / audio
        pairs.append((audio, str(row.get("caption") or "").strip()))
    return pairs


def _key(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()


def _unit_hash(key: str) -> float:
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 2**32
