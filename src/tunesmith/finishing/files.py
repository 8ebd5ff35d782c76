"""A finished clip written to a file, with the loop's facts inside it when it is a loop, and
the report added to the file's tags (the JSON comment every tunesmith file carries)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..audio.files import write_audio
from ..audio.loop_chunks import LOOP_FORMATS, write_loop_metadata
from ..errors import InvalidOptionError
from .options import FinishOptions
from .pipeline import Finished


def check_output_format(path: str | os.PathLike[str], options: FinishOptions) -> None:
    """A loop needs a file that can carry its loop points: refuse any other before work."""
    fmt = Path(path).suffix.lower().lstrip(".") or "wav"
    if options.loop is not None and fmt not in LOOP_FORMATS:
        raise InvalidOptionError(
            f"--loop writes {', '.join(LOOP_FORMATS)} files, not {fmt}: an MP3 encoder pads "
            "the start, so its loop would not be exact"
        )


def with_report(tags: Mapping[str, str] | None, finished: Finished) -> dict[str, str]:
    """`tags` with the finishing report added under "finish" to their JSON comment."""
    out = dict(tags or {})
    record = finished.report.record()
    if record is None:
        return out
    try:
        info: dict[str, Any] = json.loads(out.get("comment") or "{}")
    except json.JSONDecodeError:
        info = {"comment": out["comment"]}
    if not isinstance(info, dict):
        info = {"comment": info}
    info["finish"] = record
    out["comment"] = json.dumps(info, ensure_ascii=True, sort_keys=True)
    return out


def write_finished(
    path: str | os.PathLike[str],
    finished: Finished,
    sample_rate: int,
    subtype: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> None:
    """Write `finished.audio` to `path` with `tags` (and the report in the comment); a loop
    gets its loop points too. Written beside the target, then renamed: a reader never sees a
    file without its loop points."""
    target = Path(path)
    loop = finished.loop
    if loop is None:
        write_audio(target, finished.audio, sample_rate, subtype, tags=with_report(tags, finished))
        return
    fd, tmp = tempfile.mkstemp(prefix=".tunesmith-", suffix=target.suffix, dir=target.parent)
    os.close(fd)
    try:
        write_audio(tmp, finished.audio, sample_rate, subtype, tags=with_report(tags, finished))
        write_loop_metadata(tmp, loop.length, sample_rate, loop.bpm, loop.beats, finished.root)
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
