"""Composition: a piece as a timeline of sections, each with its own text, length and
settings, made as one continuous code sequence.

`section` (a `Section` and the limits a piece keeps to), `piece` (a piece's sections and
settings from a mapping, as files and requests give them), `piece_file` (YAML, JSON and TOML
piece files, errors naming the line), `plan` (each section's frames, context, transition and
steps), `compose` (running a plan: the sections' windows one after another, progress naming
the section). It calls `generation` (the decode loop, transitions), never the engine, and
reads `audio` (fades), `options` and `errors`; the public API (`MusicGen.compose`) and the
interfaces call it.
"""
