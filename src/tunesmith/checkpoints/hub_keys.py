"""Checkpoint-name -> module-name maps, kept as data.

Our modules are named after the Hugging Face keys where that reads naturally (the decoder and
EnCodec map one to one after a prefix); T5 drops the `layer.0` / `layer.1` wrappers.
Weight norm is folded into plain conv weights at load time: inference never needs g and v apart.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

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
    # musicgen-melody: the chroma projection belongs to its decoder (it builds the prefix).
    (r"^audio_enc_to_dec_proj\.", "decoder.chroma_proj."),
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


_IGNORED = [re.compile(p) for p in HF_IGNORED]
_RENAMES = [(re.compile(p), r) for p, r in HF_RENAMES]
TIED_T5_EMBEDDING = "text_encoder.encoder.embed_tokens.weight"


def rename_hf_key(key: str) -> str | None:
    """Our name for one Hugging Face key; None for keys we do not need.

    Keys that match no rule pass through unchanged, so that the strict load reports them.
    """
    if any(p.search(key) for p in _IGNORED):
        return None
    for pattern, repl in _RENAMES:
        if pattern.search(key):
            return pattern.sub(repl, key)
    return key


def is_weight_norm_part(key: str) -> bool:
    return any(key.endswith(suffix) for suffix in _WEIGHT_NORM_SUFFIXES)


def hf_to_tunesmith(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a whole Hugging Face MusicGen state dict onto our module names (see rename_hf_key)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = rename_hf_key(key)
        if name is not None:
            out[name] = value
    # Some exports keep only the encoder's copy of the tied embedding.
    if "text_encoder.embed_tokens.weight" not in out and TIED_T5_EMBEDDING in state:
        out["text_encoder.embed_tokens.weight"] = state[TIED_T5_EMBEDDING]
    return fold_weight_norm(out)


def strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The sub-dict under `prefix` (e.g. 'audio_encoder.') with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def hub_pairs(pairs: Iterable[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
    """Hugging Face keys -> our names (see checkpoint_keys); unneeded keys dropped."""
    tied: torch.Tensor | None = None
    shared = False
    for key, tensor in pairs:
        if key == TIED_T5_EMBEDDING:
            tied = tensor
        name = rename_hf_key(key)
        if name is None:
            continue
        shared = shared or name == "text_encoder.embed_tokens.weight"
        yield name, tensor
    if not shared and tied is not None:  # some exports keep only the encoder's copy
        yield "text_encoder.embed_tokens.weight", tied


def hub_decoder_name(name: str) -> str:
    """transformers' name for one of our decoder's modules or tensors (`layers.0.fc1` ->
    `decoder.model.decoder.layers.0.fc1`; the output heads sit outside its inner model)."""
    if name.startswith("lm_heads."):
        return f"decoder.{name}"
    return f"decoder.model.decoder.{name}"
