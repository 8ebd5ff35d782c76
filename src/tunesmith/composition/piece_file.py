"""Piece files: YAML (PyYAML), JSON or TOML (tomllib; tomli before Python 3.11), chosen by
the extension; every error names the file and, where it can be told, the line.

YAML's parser keeps each value's line, and JSON is read with it too for the lines (a JSON
file is YAML as well); a TOML section's line is its `[[sections]]` header's.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import InvalidOptionError
from .piece import Piece, Place, piece_from_mapping

FORMATS = {".yaml": "YAML", ".yml": "YAML", ".json": "JSON", ".toml": "TOML"}
MAX_FILE_BYTES = 1 << 20  # a piece file is a few lines; this refuses what cannot be one

Lines = Callable[[Place], int | None]  # a place's line in the file (1-based), if known


def read_piece(path: str | Path, defaults: Mapping[str, Any] | None = None) -> Piece:
    """The piece a file holds (see `piece.piece_from_mapping`), checked."""
    path = Path(path)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise InvalidOptionError(
            f"{path}: a piece file is YAML (.yaml, .yml), JSON (.json) or TOML (.toml)"
        )
    if not path.is_file():
        raise InvalidOptionError(f"piece file {str(path)!r} does not exist")
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise InvalidOptionError(
                f"{path}: larger than a piece file can be ({MAX_FILE_BYTES} bytes)"
            )
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InvalidOptionError(f"{path}: cannot be read ({err})") from None
    data, lines = PARSERS[kind](text, path)

    def where(place: Place) -> str:
        line = lines(place)
        return f"{path}, line {line}" if line is not None else str(path)

    return piece_from_mapping(data, where, defaults)


def parse_yaml(text: str, path: Path) -> tuple[Any, Lines]:
    import yaml

    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise InvalidOptionError(f"{path}{line}: not valid YAML: {problem}") from None
    return data, node_lines(root)


def parse_json(text: str, path: Path) -> tuple[Any, Lines]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidOptionError(f"{path}, line {err.lineno}: not valid JSON: {err.msg}") from None
    import yaml

    try:
        lines = node_lines(yaml.compose(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError:  # JSON that YAML 1.1 does not read (tabs, ...): read, no lines
        lines = _no_lines
    return data, lines


def parse_toml(text: str, path: Path) -> tuple[Any, Lines]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:  # its message ends "(at line N, column M)"
        raise InvalidOptionError(f"{path}: not valid TOML: {err}") from None
    return data, toml_lines(text)


PARSERS = {"YAML": parse_yaml, "JSON": parse_json, "TOML": parse_toml}


def node_lines(root: Any) -> Lines:
    """Lines of a YAML node tree: a place's line, or that of the nearest enclosing value."""
    from yaml.nodes import MappingNode, SequenceNode

    def find(place: Place) -> int | None:
        if root is None:
            return None
        node, line = root, root.start_mark.line
        for part in place:
            if isinstance(node, MappingNode):
                found = [(k, v) for k, v in node.value if getattr(k, "value", None) == part]
                if not found:
                    break
                key, node = found[0]
                line = key.start_mark.line
            elif (
                isinstance(node, SequenceNode) and isinstance(part, int) and part < len(node.value)
            ):
                node = node.value[part]
                line = node.start_mark.line
            else:
                break
        return line + 1

    return find


def toml_lines(text: str) -> Lines:
    """Lines of a TOML file's keys: top-level ones before the first table, a section's at its
    `[[sections]]` header (and its keys below it)."""
    rows = text.splitlines()
    headers = [i for i, row in enumerate(rows) if re.match(r"\s*\[\[\s*sections\s*\]\]", row)]
    tables = [i for i, row in enumerate(rows) if re.match(r"\s*\[", row)]

    def key_line(name: object, start: int, stop: int) -> int | None:
        pattern = re.compile(rf"\s*\"?{re.escape(str(name))}\"?\s*=")
        return next((i for i in range(start, stop) if pattern.match(rows[i])), None)

    def find(place: Place) -> int | None:
        if len(place) >= 2 and isinstance(place[1], int) and place[1] < len(headers):
            start = headers[place[1]]
            stop = next((t for t in tables if t > start), len(rows))
            line = key_line(place[2], start + 1, stop) if len(place) > 2 else None
            return 1 + (line if line is not None else start)
        if place:
            line = key_line(place[0], 0, tables[0] if tables else len(rows))
            return None if line is None else line + 1
        return None

    return find


def _no_lines(place: Place) -> int | None:
    return None
