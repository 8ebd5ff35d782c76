"""Checkpoint-name -> module-name maps, kept as data.

Our modules are named after the Hugging Face keys where that reads naturally (the decoder and
EnCodec map one to one after a prefix); T5 drops the `layer.0` / `layer.1` wrappers.
Weight norm is folded into plain conv weights at load time: inference never needs g and v apart.
"""

from __future__ import annotations

import re

import torch

# (pattern, replacement) applied in order to every Hugging Face key; first match wins.
HF_RENAMES: list[tuple[str, str]] = [
    (r"^text_encoder\.shared\.weight$", "text_encoder.embed_tokens.weight"),
    (
        r"^text_encoder\.encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.relative_attention_bias\.",
        r"text_encoder.relative_attention_bias.",
    ),
    (
        r"^text_encoder\.encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.",
        r"text_encoder.blocks.\1.attn.",
    ),
    (
        r"^text_encoder\.encoder\.block\.(\d+)\.layer\.0\.layer_norm\.",
        r"text_encoder.blocks.\1.attn_norm.",
    ),
    (
        r"^text_encoder\.encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.",
        r"text_encoder.blocks.\1.ffn.",
    ),
    (
        r"^text_encoder\.encoder\.block\.(\d+)\.layer\.1\.layer_norm\.",
        r"text_encoder.blocks.\1.ffn_norm.",
    ),
    (r"^text_encoder\.encoder\.final_layer_norm\.", "text_encoder.final_norm."),
    (r"^decoder\.model\.decoder\.", "decoder."),
]

# Keys in the hub files that carry nothing we need: tied copies, recomputed tables, EMA state.
HF_IGNORED: list[str] = [
    r"^text_encoder\.encoder\.embed_tokens\.weight$",  # tied to text_encoder.shared.weight
    r"^decoder\.model\.decoder\.embed_positions\.weights$",  # sinusoidal, recomputed
    r"^audio_encoder\.quantizer\.layers\.\d+\.codebook\.(inited|cluster_size|embed_avg)$",
]

_WEIGHT_NORM_SUFFIXES = {
    ".weight_g": "g",
    ".weight_v": "v",
    ".parametrizations.weight.original0": "g",
    ".parametrizations.weight.original1": "v",
}


def fold_weight_norm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace every (g, v) weight-norm pair by `weight = g * v / ||v||` (norm over all dims but 0).

    Accepts both namings: the older `weight_g` / `weight_v` and torch's newer
    `parametrizations.weight.original0` / `original1`.
    """
    out: dict[str, torch.Tensor] = {}
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        for suffix, part in _WEIGHT_NORM_SUFFIXES.items():
            if key.endswith(suffix):
                pairs.setdefault(key[: -len(suffix)], {})[part] = value
                break
        else:
            out[key] = value
    for base, gv in pairs.items():
        if set(gv) != {"g", "v"}:
            raise KeyError(f"weight norm for {base!r} has only {sorted(gv)}; need both g and v")
        g, v = gv["g"].float(), gv["v"].float()
        norm = v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))
        out[base + ".weight"] = (g * v / norm).to(gv["v"].dtype)
    return out


def hf_to_tunesmith(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a Hugging Face MusicGen state dict onto our module names.

    Keys that match nothing are passed through unchanged so that the strict load reports them.
    """
    ignored = [re.compile(p) for p in HF_IGNORED]
    renames = [(re.compile(p), r) for p, r in HF_RENAMES]
    out: dict[str, torch.Tensor] = {}
    tied_embedding = state.get("text_encoder.encoder.embed_tokens.weight")
    for key, value in state.items():
        if any(p.search(key) for p in ignored):
            continue
        for pattern, repl in renames:
            if pattern.search(key):
                key = pattern.sub(repl, key)
                break
        out[key] = value
    # Some exports keep only the encoder's copy of the tied embedding.
    if "text_encoder.embed_tokens.weight" not in out and tied_embedding is not None:
        out["text_encoder.embed_tokens.weight"] = tied_embedding
    return fold_weight_norm(out)


def strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The sub-dict under `prefix` (e.g. 'audio_encoder.') with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
