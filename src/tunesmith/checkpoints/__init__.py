"""Checkpoints: from a name to a loaded network.

`hub` (download and the cache, reading safetensors), `loading` (strict, tensor by tensor onto
a model built on `meta`), `hub_keys` and `audiocraft_keys` (the key maps, as data),
`audiocraft_files` (audiocraft's `state_dict.bin` folders), `catalog` (the known checkpoints,
sizes, licences), `tokenizer` (T5's, from `tokenizer.json`). May import `models`, the
engine's weight formats (`engine.int8`), `options`, `config` and `errors`.
"""
