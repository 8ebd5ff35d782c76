"""Finishing: what happens to decoded audio before it is written, the same for every command
and for the Python API. `options` (plain data, no torch: the CLI reads its defaults) holds
`FinishOptions` and the key names; `prompts` adds "N bpm" / "in A minor" to a text; `pipeline`
runs tempo -> key -> loop -> fades -> level on one clip and reports what it did and measured;
`files` writes a finished clip with its loop points.

Imports `audio`, `options` and `errors`; `jobs`, `cli`, `server` and the public API import it.
"""
