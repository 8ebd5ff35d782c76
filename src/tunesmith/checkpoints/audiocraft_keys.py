"""audiocraft's own checkpoint files, mapped onto our modules (name maps kept as data).

An audiocraft MusicGen folder holds two `torch.save` pickles:

- `state_dict.bin`: `{"best_state": LM weights (fp16), "xp.cfg": the training config as YAML
  text, ...}`. Attention projections are fused (`in_proj_weight` = rows q | k | v), and the
  text projection lives in the condition provider. The T5 encoder is not in it: audiocraft
  takes `t5-base` from the hub.
- `compression_state_dict.bin`: `{"best_state": EnCodec weights, "xp.cfg": ...}` with weight
  norm as `weight_g` / `weight_v`, or just `{"pretrained": "facebook/encodec_32khz"}`, a
  pointer to a codec in the Hugging Face layout.

Sizes come from tensor shapes; the number of attention heads (invisible in shapes) from
`xp.cfg` when it is there, else from the table of official presets.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import torch

from ..config import EncodecConfig, LMConfig, preset_heads

LM_FILE = "state_dict.bin"
TEXT_PROJECTION = "condition_provider.conditioners.description.output_proj"
CODEC_FILE = "compression_state_dict.bin"

# audiocraft LM name -> ours; first match wins. `{qkv}` rows are split three ways (see FUSED).
LM_RENAMES: list[tuple[str, str]] = [
    (r"^emb\.(\d+)\.weight$", r"decoder.embed_tokens.\1.weight"),
    (
        r"^transformer\.layers\.(\d+)\.self_attn\.in_proj_weight$",
        r"decoder.layers.\1.self_attn.{qkv}",
    ),
    (
        r"^transformer\.layers\.(\d+)\.self_attn\.out_proj\.",
        r"decoder.layers.\1.self_attn.out_proj.",
    ),
    (
        r"^transformer\.layers\.(\d+)\.cross_attention\.in_proj_weight$",
        r"decoder.layers.\1.encoder_attn.{qkv}",
    ),
    (
        r"^transformer\.layers\.(\d+)\.cross_attention\.out_proj\.",
        r"decoder.layers.\1.encoder_attn.out_proj.",
    ),
    (r"^transformer\.layers\.(\d+)\.norm1\.", r"decoder.layers.\1.self_attn_layer_norm."),
    (r"^transformer\.layers\.(\d+)\.norm_cross\.", r"decoder.layers.\1.encoder_attn_layer_norm."),
    (r"^transformer\.layers\.(\d+)\.norm2\.", r"decoder.layers.\1.final_layer_norm."),
    (r"^transformer\.layers\.(\d+)\.linear1\.", r"decoder.layers.\1.fc1."),
    (r"^transformer\.layers\.(\d+)\.linear2\.", r"decoder.layers.\1.fc2."),
    (r"^out_norm\.", "decoder.layer_norm."),
    (r"^linears\.(\d+)\.", r"decoder.lm_heads.\1."),
    (rf"^{re.escape(TEXT_PROJECTION)}\.", "enc_to_dec_proj."),
]
# A fused [3D, D] projection is these three [D, D] blocks, in this order.
FUSED = ("q_proj.weight", "k_proj.weight", "v_proj.weight")

# audiocraft EnCodec name -> ours (weight-norm suffixes pass through and are folded later).
CODEC_RENAMES: list[tuple[str, str]] = [
    (r"^(encoder|decoder)\.model\.(\d+)\.conv\.conv\.", r"audio_encoder.\1.layers.\2.conv."),
    (r"^decoder\.model\.(\d+)\.convtr\.convtr\.", r"audio_encoder.decoder.layers.\1.conv."),
    (
        r"^(encoder|decoder)\.model\.(\d+)\.(block\.\d+|shortcut)\.conv\.conv\.",
        r"audio_encoder.\1.layers.\2.\3.conv.",
    ),
    (r"^(encoder|decoder)\.model\.(\d+)\.lstm\.", r"audio_encoder.\1.layers.\2.lstm."),
    (
        r"^quantizer\.vq\.layers\.(\d+)\._codebook\.embed$",
        r"audio_encoder.quantizer.layers.\1.codebook.embed",
    ),
]
# Training state with no part in inference.
CODEC_IGNORED = [r"^quantizer\.vq\.layers\.\d+\._codebook\.(inited|cluster_size|embed_avg)$"]

_LM = [(re.compile(p), r) for p, r in LM_RENAMES]
_CODEC = [(re.compile(p), r) for p, r in CODEC_RENAMES]
_CODEC_IGNORED = [re.compile(p) for p in CODEC_IGNORED]


def lm_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """audiocraft LM state -> our names; fused q|k|v split into views (no copy). Names that
    match no rule pass through unchanged, so that the strict load reports them."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = _rename(key, _LM)
        if name.endswith("{qkv}"):
            for part, block in zip(FUSED, value.chunk(3, dim=0), strict=True):
                out[name.replace("{qkv}", part)] = block
        else:
            out[name] = value
    return out


def codec_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """audiocraft EnCodec state -> our names (weight-norm g / v still apart)."""
    return {
        _rename(key, _CODEC): value
        for key, value in state.items()
        if not any(p.search(key) for p in _CODEC_IGNORED)
    }


def _rename(key: str, rules: list[tuple[re.Pattern[str], str]]) -> str:
    for pattern, repl in rules:
        if pattern.search(key):
            return pattern.sub(repl, key)
    return key


# --- sizes from shapes (and xp.cfg) ---------------------------------------------------------


def _count(state: dict[str, torch.Tensor], pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for k in state if (m := regex.match(k))})


def _get(cfg: dict[str, Any], path: str) -> Any:
    node: Any = cfg
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def lm_config(state: dict[str, torch.Tensor], cfg: dict[str, Any], codec_books: int) -> LMConfig:
    """The decoder's sizes from its weights; `codec_books` (quantizers per channel) tells
    stereo (twice as many codebooks) from mono. Raises ValueError for layouts we do not run."""
    if "emb.0.weight" not in state or "transformer.layers.0.linear1.weight" not in state:
        raise ValueError("no `emb.0` / `transformer.layers.0` tensors: not a MusicGen LM")
    if any(k.startswith("condition_provider.conditioners.self_wav.") for k in state):
        raise ValueError("a melody (chroma-conditioned) model: that layout is not supported yet")
    rows, width = state["emb.0.weight"].shape
    ffn = state["transformer.layers.0.linear1.weight"].shape[0]
    layers = _count(state, r"^transformer\.layers\.(\d+)\.")
    books = _count(state, r"^emb\.(\d+)\.weight$")
    heads = _get(cfg, "transformer_lm.num_heads") or preset_heads(layers, width, ffn)
    channels = 2 if books == 2 * codec_books else 1
    stereo = _get(cfg, "interleave_stereo_codebooks.use")
    if stereo is not None and bool(stereo) != (channels == 2):
        raise ValueError(
            f"xp.cfg says stereo={stereo} but the LM has {books} codebooks for a "
            f"{codec_books}-codebook codec"
        )
    _check_supported(cfg)
    pattern = _get(cfg, "codebooks_pattern.delay.delays")
    want = [k // channels for k in range(books)]
    if pattern is not None and list(pattern) != want:
        raise ValueError(f"xp.cfg has codebook delays {list(pattern)}; tunesmith runs {want}")
    return LMConfig(
        vocab_size=rows - 1,
        hidden_size=width,
        num_layers=layers,
        num_heads=int(heads),
        ffn_dim=ffn,
        num_codebooks=books,
        audio_channels=channels,
    ).checked()


# Training-config values our decoder assumes, where xp.cfg states them.
_REQUIRED = {
    "transformer_lm.positional_embedding": "sin",
    "transformer_lm.norm_first": True,
    "transformer_lm.activation": "gelu",
    "transformer_lm.norm": "layer_norm",
    "transformer_lm.positional_scale": 1.0,
    "codebooks_pattern.modeling": "delay",
    "fuser.cross_attention_pos_emb": False,
}


def _check_supported(cfg: dict[str, Any]) -> None:
    for path, want in _REQUIRED.items():
        got = _get(cfg, path)
        if got is not None and got != want:
            raise ValueError(f"xp.cfg has {path}={got!r}; tunesmith runs only {want!r}")


def has_text_projection(state: dict[str, torch.Tensor]) -> bool:
    """Whether the LM file holds the text conditioner's projection to the decoder width
    (audiocraft's T5 conditioner always has one, whatever the widths)."""
    return any(k.startswith(f"{TEXT_PROJECTION}.") for k in state)


def max_duration(cfg: dict[str, Any], default: float = 30.0) -> float:
    """Seconds per generation window: the training segment length."""
    value = _get(cfg, "dataset.segment_duration")
    return float(value) if isinstance(value, (int, float)) and value > 0 else default


def codec_config(
    state: dict[str, torch.Tensor], cfg: dict[str, Any] | None = None, sampling_rate: int = 32000
) -> EncodecConfig:
    """EnCodec from audiocraft's EnCodec weights (its own names) and its training config
    (`xp.cfg`, see `codec_settings`); without one, kernel sizes, dilations and padding are the
    32 kHz model's. The strict load checks every size against the weights."""

    def weight(base: str) -> torch.Tensor:
        for suffix in (".weight_v", ".weight"):
            if base + suffix in state:
                return state[base + suffix]
        raise KeyError(base)

    def indices(pattern: str) -> list[int]:
        regex = re.compile(pattern)
        return sorted({int(m.group(1)) for k in state if (m := regex.match(k))})

    try:
        convs = indices(r"^encoder\.model\.(\d+)\.conv\.conv\.")
        first, last = (
            weight(f"encoder.model.{convs[0]}.conv.conv"),
            weight(f"encoder.model.{convs[-1]}.conv.conv"),
        )
        # Upsampling layers, in decoder order: ConvTranspose1d [in, out, 2 * ratio].
        ratios = tuple(
            weight(f"decoder.model.{i}.convtr.convtr").shape[-1] // 2
            for i in indices(r"^decoder\.model\.(\d+)\.convtr\.")
        )
        book = state["quantizer.vq.layers.0._codebook.embed"].shape
    except (KeyError, IndexError):
        raise ValueError(
            "not an EnCodec state (no encoder / decoder / quantizer tensors)"
        ) from None
    blocks = len(indices(r"^encoder\.model\.(\d+)\.block\."))
    from_weights = EncodecConfig(
        sampling_rate=sampling_rate,
        audio_channels=first.shape[1],
        num_filters=first.shape[0],
        hidden_size=last.shape[0],
        upsampling_ratios=ratios,
        num_residual_layers=max(1, blocks // max(1, len(ratios))),
        num_lstm_layers=len(indices(r"^encoder\.model\.\d+\.lstm\.weight_ih_l(\d+)$")),
        codebook_size=book[0],
        codebook_dim=book[1],
        num_quantizers=len(indices(r"^quantizer\.vq\.layers\.(\d+)\._codebook\.embed$")),
        use_conv_shortcut=any(".shortcut." in k for k in state),
    )
    return codec_settings(from_weights, cfg or {})


# SEANet settings of xp.cfg the codec runs as given (seanet.NAME -> EncodecConfig field).
_SEANET_HONOURED = {
    "pad_mode": "pad_mode",
    "causal": "use_causal_conv",
    "kernel_size": "kernel_size",
    "residual_kernel_size": "residual_kernel_size",
    "last_kernel_size": "last_kernel_size",
    "dilation_base": "dilation_growth_rate",
    "compress": "compress",
}
# ... those the weights already fix (checked against them) ...
_SEANET_FROM_WEIGHTS = {
    "dimension": "hidden_size",
    "n_filters": "num_filters",
    "lstm": "num_lstm_layers",
    "n_residual_layers": "num_residual_layers",
}
# ... and those only one value of which the codec computes.
_SEANET_FIXED: dict[str, Any] = {
    "activation": "ELU",
    "activation_params.alpha": 1.0,
    "norm": "weight_norm",
    "disable_norm_outer_blocks": 0,
    "decoder.trim_right_ratio": 1.0,
    "decoder.final_activation": None,
}
_PAD_MODES = ("reflect", "constant", "replicate")


def codec_settings(codec: EncodecConfig, cfg: dict[str, Any]) -> EncodecConfig:
    """`codec` (sizes read from the weights) with the settings of audiocraft's training
    config `cfg` applied; a setting the codec does not run is refused by name."""
    seanet = cfg.get("seanet")
    if not isinstance(seanet, dict):
        return codec
    changes: dict[str, Any] = {}
    for name, field_name in _SEANET_HONOURED.items():
        if name in seanet:
            changes[field_name] = seanet[name]
    if changes.get("pad_mode", "reflect") not in _PAD_MODES:
        raise ValueError(
            f"xp.cfg has seanet.pad_mode={changes['pad_mode']!r}; tunesmith runs {_PAD_MODES}"
        )
    for name, field_name in _SEANET_FROM_WEIGHTS.items():
        if name in seanet and seanet[name] != getattr(codec, field_name):
            raise ValueError(
                f"xp.cfg has seanet.{name}={seanet[name]!r} but the weights have "
                f"{getattr(codec, field_name)!r}"
            )
    if "ratios" in seanet and tuple(seanet["ratios"]) != codec.upsampling_ratios:
        raise ValueError(
            f"xp.cfg has seanet.ratios={list(seanet['ratios'])} but the weights have "
            f"{list(codec.upsampling_ratios)}"
        )
    if "true_skip" in seanet and bool(seanet["true_skip"]) == codec.use_conv_shortcut:
        raise ValueError(
            f"xp.cfg has seanet.true_skip={seanet['true_skip']!r} but the weights "
            f"{'have' if codec.use_conv_shortcut else 'have no'} shortcut convolutions"
        )
    for path, want in _SEANET_FIXED.items():
        got = _get(seanet, path)
        if got is not None and got != want:  # (absent and null read alike: None)
            raise ValueError(f"xp.cfg has seanet.{path}={got!r}; tunesmith runs only {want!r}")
    for side in ("encoder", "decoder"):
        extra = set(seanet.get(side) or {}) - {"trim_right_ratio", "final_activation",
                                                "final_activation_params"}  # fmt: skip
        if extra:
            raise ValueError(
                f"xp.cfg sets seanet.{side}.{sorted(extra)[0]} for the {side} alone; "
                "tunesmith runs one setting for both"
            )
    if _get(cfg, "encodec.renormalize"):
        raise ValueError("xp.cfg has encodec.renormalize=True; tunesmith runs only False")
    return dataclasses.replace(codec, **changes)
