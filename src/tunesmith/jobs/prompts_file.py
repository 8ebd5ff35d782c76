"""Prompts files for batch jobs: .txt, .csv or .jsonl -> validated rows.

- .txt: one prompt a line; blank lines and lines starting with `#` are skipped.
- .csv: a header naming `prompt` and any of the optional columns below; empty cells take the
  command line's value.
- .jsonl: one JSON object a line with the same keys (blank and `#` lines skipped).

Optional columns: duration, seed, top_k, top_p, temperature, cfg, file, format, and the
finishing ones: bpm, key, loop (bars), fade_in, fade_out (seconds). `file` is a
name inside the output folder (default `NNN-words-of-the-prompt.wav`); its extension picks the
format, else `format`, else the command line's `--format`, else wav.

A file that cannot be read, or that names unknown columns, raises BatchFileError; a row with a
bad value becomes a Row with `error` set (and its line in the file), so that every bad row can
be listed before any model loads (`bad_rows_report`), or skipped.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import io
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import TunesmithError
from ..finishing.options import FinishOptions
from ..options import AUDIO_FORMATS, DEFAULTS, GenerationOptions, audio_extension

COLUMNS = ("prompt", "duration", "seed", "top_k", "top_p", "temperature", "cfg", "file", "format")
FINISH_COLUMNS = ("bpm", "key", "loop", "fade_in", "fade_out")  # FinishOptions fields, per row
_FIELD = {"cfg": "cfg_scale"}  # a column's GenerationOptions field, where the names differ
Entry = dict[str, Any]
Numbered = list[tuple[int, dict[str, Any]]]  # (the line a row starts on, its fields)


class BatchFileError(TunesmithError):
    """A prompts file that cannot be read or does not have the expected shape."""


def options_record(options: GenerationOptions, seed: int | None) -> dict[str, Any]:
    """Options as the manifest and file tags store them (the prompts file's names: `cfg`),
    with the seed actually used."""
    record = dataclasses.asdict(options)
    record["cfg"] = record.pop("cfg_scale")
    return {"duration": record.pop("duration"), **record, "seed": seed}


def options_from_record(record: dict[str, Any]) -> GenerationOptions:
    """The options a manifest's `settings` record holds (its seed apart)."""
    values = {("cfg_scale" if k == "cfg" else k): v for k, v in record.items() if k != "seed"}
    return GenerationOptions.from_mapping(values)


@dataclass(frozen=True)
class Row:
    """One output to make: row number (1-based, in file order), prompt, settings, file, and
    the line of the prompts file it starts on."""

    number: int
    prompt: str | None
    settings: GenerationOptions | None  # without the seed: that is per row or per batch
    seed: int | None
    file: str
    format: str
    error: str | None = None
    line: int = 0
    finish: FinishOptions | None = None  # tempo, key, loop, fades (None: only the level)

    def settings_record(self, seed: int | None) -> dict[str, Any]:
        """Settings as the manifest stores them, with the seed actually used (and the
        finishing asked for, when there is any)."""
        if not self.settings:
            return {}
        finishing = self.finish.record() if self.finish else None
        return {**options_record(self.settings, seed), **(finishing or {})}

    def entry(
        self,
        base: Entry,
        *,
        seed: int | None = None,
        error: str | None = None,
        subtype: str | None = None,
        batch: dict[str, Any] | None = None,
        seconds: float | None = None,
    ) -> Entry:
        """The manifest line for this row: done unless `error` is given."""
        return {
            "row": self.number,
            "prompt": self.prompt,
            "status": "failed" if error else "done",
            "error": error,
            "file": self.file,
            "format": self.format,
            "subtype": subtype,
            **base,
            "settings": self.settings_record(seed) if self.settings else None,
            "seed_from": "row" if self.seed is not None else "drawn",
            "batch": batch,
            "seconds_taken": None if seconds is None else round(seconds, 3),
            "tunesmith": __version__,
            "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(" ", "seconds"),
        }


def read_prompts(
    path: str | os.PathLike[str],
    defaults: GenerationOptions = DEFAULTS,
    default_format: str | None = None,
    finish: FinishOptions | None = None,
) -> list[Row]:
    """Every row of a prompts file, validated (see the module docstring); `finish` holds the
    command line's finishing, which the finishing columns change row by row."""
    source = Path(path)
    kind = source.suffix.lower()
    if kind not in (".txt", ".csv", ".jsonl"):
        raise BatchFileError(f"prompts file {str(source)!r} must end in .txt, .csv or .jsonl")
    try:
        text = source.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise BatchFileError(f"cannot read prompts file {str(source)!r}: {err}") from None
    raw = _csv(text, source) if kind == ".csv" else _lines(text, source, kind == ".jsonl")
    if not raw:
        raise BatchFileError(f"prompts file {str(source)!r} has no prompts")
    width = max(3, len(str(len(raw))))
    rows = [
        dataclasses.replace(_row(i, fields, defaults, default_format, width), line=line)
        for i, (line, fields) in enumerate(raw, 1)
    ]
    rows = [_finishing(row, fields, finish) for row, (_, fields) in zip(rows, raw, strict=True)]
    return _refuse_shared_files(rows)


def check_destinations(rows: list[Row], folder: Path) -> list[Row]:
    """The rows, with an error on each whose file cannot be made in `folder` as it stands (a
    file where the row needs a folder, or a folder where it needs a file)."""
    out = []
    for row in rows:
        error = None if row.error else _destination_error(row.file, folder)
        out.append(
            dataclasses.replace(row, settings=None, seed=None, error=error) if error else row
        )
    return out


def _destination_error(file: str, folder: Path) -> str | None:
    name = Path(file)
    for parent in reversed(name.parents[:-1]):  # from the top: "a", then "a/b"
        if (folder / parent).exists() and not (folder / parent).is_dir():
            return f"file {file!r}: {parent.as_posix()!r} in the output folder is a file"
    if (folder / name).is_dir():
        return f"file {file!r} is a folder in the output folder"
    return None


def bad_rows_report(source: str | os.PathLike[str], rows: list[Row]) -> str:
    """Each row that cannot run, a line each (where it is in the file, and why), then what
    to do."""
    bad = [row for row in rows if row.error is not None]
    lines = [f"{os.fspath(source)} line {row.line}: {row.error}" for row in bad]
    others = len(rows) - len(bad)
    way = f", or add --skip-bad-rows to make the other {others}" if others else ""
    lines.append(f"{len(bad)} of {len(rows)} rows cannot run, so nothing was made: fix them{way}")
    return "\n".join(lines)


def _lines(text: str, source: Path, is_json: bool) -> Numbered:
    rows: Numbered = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not is_json:
            rows.append((number, {"prompt": line}))
            continue
        try:
            fields = json.loads(line)
        except json.JSONDecodeError as err:
            raise BatchFileError(f"{source} line {number}: not valid JSON ({err.msg})") from None
        if not isinstance(fields, dict):
            raise BatchFileError(f"{source} line {number}: expected a JSON object")
        _check_columns(fields, source, f" line {number}")
        rows.append((number, fields))
    return rows


def _csv(text: str, source: Path) -> Numbered:
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [name.strip().lower() for name in next(reader, [])]
    if "prompt" not in header:
        raise BatchFileError(f"{source}: the CSV header must name a 'prompt' column")
    _check_columns(dict.fromkeys(header), source, "")
    rows: Numbered = []
    read = reader.line_num  # lines read so far (a quoted cell may span several)
    for cells in reader:
        start, read = read + 1, reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        pairs = zip(header, cells, strict=False)  # short rows: missing cells are empty
        fields: dict[str, Any] = {k: v.strip() for k, v in pairs if v.strip()}
        fields.setdefault("prompt", "")
        if len(cells) > len(header):
            fields["_error"] = f"{len(cells)} cells for {len(header)} columns"
        rows.append((start, fields))
    return rows


def _check_columns(fields: dict[str, Any], source: Path, where: str) -> None:
    unknown = [str(k) for k in fields if k not in COLUMNS and k not in FINISH_COLUMNS]
    if unknown:
        raise BatchFileError(
            f"{source}{where}: unknown column(s) {', '.join(map(repr, unknown))}"
            f" (known: {', '.join(COLUMNS + FINISH_COLUMNS)})"
        )


def _row(
    number: int,
    fields: dict[str, Any],
    defaults: GenerationOptions,
    default_format: str | None,
    width: int,
) -> Row:
    prompt = fields.get("prompt")
    try:
        if "_error" in fields:
            raise ValueError(fields["_error"])
        if prompt is not None and not isinstance(prompt, str):
            raise ValueError(f"prompt must be text, got {prompt!r}")
        changes: dict[str, Any] = {_FIELD.get(k, k): _number(fields[k], k)
                                   for k in ("duration", "top_p", "temperature", "cfg")
                                   if k in fields}  # fmt: skip
        if "top_k" in fields:
            changes["top_k"] = _integer(fields["top_k"], "top_k")
        seed = _integer(fields["seed"], "seed") if fields.get("seed") is not None else None
        settings = GenerationOptions.of(defaults, **changes, seed=None)
        GenerationOptions.of(settings, seed=seed)  # the row's seed, validated with the rest
        file, fmt = output_name(number, prompt, fields.get("file"), fields.get("format"),
                                default_format, width)  # fmt: skip
    except (ValueError, TunesmithError) as err:
        file, fmt = f"{number:0{width}d}-failed", "wav"
        return Row(number, prompt, None, None, file, fmt, error=str(err))
    return Row(number, prompt, settings, seed, file, fmt)


def _finishing(row: Row, fields: dict[str, Any], defaults: FinishOptions | None) -> Row:
    """`row` with its finishing: the command line's, changed by the row's own columns."""
    if row.error is not None or row.settings is None:
        return row
    try:
        changes: dict[str, Any] = {k: _number(fields[k], k) for k in ("bpm", "fade_in", "fade_out")
                                   if k in fields}  # fmt: skip
        if "loop" in fields:
            changes["loop"] = _integer(fields["loop"], "loop")
        if "key" in fields:
            changes["key"] = str(fields["key"])
        finish = FinishOptions.of(defaults, **changes) if changes or defaults else None
        if finish is not None:
            finish.check_fits(row.settings.duration)
            from ..finishing.files import check_output_format

            check_output_format(row.file, finish)
    except (ValueError, TunesmithError) as err:
        return dataclasses.replace(row, settings=None, seed=None, error=str(err))
    return dataclasses.replace(row, finish=finish)


def output_name(
    number: int,
    prompt: str | None,
    file: Any,
    fmt: Any,
    default_format: str | None,
    width: int = 3,
) -> tuple[str, str]:
    """(file name inside the output folder, format) for a row; ValueError when they clash."""
    if fmt is not None and str(fmt).lower().lstrip(".") not in AUDIO_FORMATS:
        raise ValueError(f"unknown format {fmt!r} (choose from {', '.join(AUDIO_FORMATS)})")
    fmt = str(fmt).lower().lstrip(".") if fmt is not None else None
    if file is None:
        slug = re.sub(r"[^a-z0-9]+", "-", (prompt or "unconditional").lower())[:40].strip("-")
        file = f"{number:0{width}d}-{slug or 'clip'}"
    name = Path(str(file))
    if name.is_absolute() or ".." in name.parts or not name.name:
        raise ValueError(f"file {str(file)!r} must be a name inside the output folder")
    suffix = audio_extension(str(file), "file")
    if suffix:
        if fmt is not None and fmt != suffix:
            raise ValueError(f"file {str(file)!r} does not match format {fmt!r}")
        fmt = suffix
    else:
        fmt = fmt or default_format or "wav"
        name = name.with_name(f"{name.name}.{fmt}")
    from ..audio.files import file_format

    file_format(name)  # this libsndfile can write it (MP3 needs 1.1+)
    return name.as_posix(), fmt


def _refuse_shared_files(rows: list[Row]) -> list[Row]:
    owner: dict[str, int] = {}
    out = []
    for row in rows:
        first = owner.setdefault(row.file, row.number) if row.error is None else row.number
        if first != row.number:
            row = dataclasses.replace(
                row, settings=None, seed=None, error=f"file {row.file!r} is row {first}'s too"
            )
        out.append(row)
    return out


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if math.isnan(number):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return number


def _integer(value: Any, name: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
        return int(value)
    try:
        number = _number(value, name)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {value!r}") from None
    if not number.is_integer():
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    return int(number)
