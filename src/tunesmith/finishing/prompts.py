"""Tempo and key as words in the text, the only way MusicGen learned them (its captions say
"120 bpm", "in A minor"): `hinted_prompt` adds what the text does not already say.

- A text *names a tempo* when it holds a number joined to "bpm" or "beats per minute" (either
  order: "120 bpm", "120-BPM", "bpm: 96", "90 beats per minute"). Words such as "fast" or
  "allegro" do not: they say how it feels, not the number, so "N bpm" is added beside them.
- A text *names a key* when it holds a note A-G (with # or b) followed by "major", "minor",
  "maj" or "min" ("A minor", "in F# major", "Bb min"), or "key of" and a note.
"""

from __future__ import annotations

import re

from .options import FinishOptions

_NUMBER = r"\d+(?:[.,]\d+)?"
_TEMPO = re.compile(
    rf"{_NUMBER}\s*-?\s*(?:bpm|b\.p\.m\.?|beats\s+(?:per|a)\s+minute)\b"
    rf"|\bbpm\s*[:=]?\s*{_NUMBER}",
    re.IGNORECASE,
)
_KEY = re.compile(
    r"\b[a-g](?:#|♯|b|♭)?\s*-?\s*(?:major|minor|maj|min)\b|\bkey\s+of\s+[a-g]\b", re.IGNORECASE
)


def names_tempo(text: str) -> bool:
    """Whether `text` already gives a tempo in BPM (see the module docstring)."""
    return bool(_TEMPO.search(text))


def names_key(text: str) -> bool:
    """Whether `text` already gives a key (see the module docstring)."""
    return bool(_KEY.search(text))


def hinted_prompt(text: str | None, options: FinishOptions) -> str | None:
    """`text` with ", N bpm" and ", in K" added for the options' tempo and key, unless it names
    them already. An unconditional prompt (None or "") stays unconditional."""
    if not text:
        return text
    hints = []
    if options.bpm is not None and not names_tempo(text):
        hints.append(f"{options.bpm:g} bpm")
    if options.key is not None and not names_key(text):
        hints.append(f"in {options.key}")
    return ", ".join([text.rstrip(" ,."), *hints]) if hints else text
