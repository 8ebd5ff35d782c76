"""Frozen configuration dataclasses for the three networks, read from a hub `config.json`.

Field names follow our code; `from_hf` maps the Hugging Face names onto them. Derived sizes
are properties, so a config never holds two numbers that could disagree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class T5Config:
    """T5 encoder (text conditioning)."""

    vocab_size: int = 32128
    d_model: int = 768
    d_kv: int = 64
    d_ff: int = 3072
    num_layers: int = 12
    num_heads: int = 12
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6

    @property
    def inner_dim(self) -> int:
        return self.num_heads * self.d_kv

    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> T5Config:
        act = cfg.get("feed_forward_proj", "relu")
        if act != "relu":
            raise ValueError(f"unsupported T5 feed_forward_proj {act!r}: only 'relu' (t5-base)")
        return cls(
            vocab_size=cfg["vocab_size"],
            d_model=cfg["d_model"],
            d_kv=cfg["d_kv"],
            d_ff=cfg["d_ff"],
            num_layers=cfg["num_layers"],
            num_heads=cfg["num_heads"],
            relative_attention_num_buckets=cfg.get("relative_attention_num_buckets", 32),
            relative_attention_max_distance=cfg.get("relative_attention_max_distance", 128),
            layer_norm_epsilon=cfg.get("layer_norm_epsilon", 1e-6),
        )


@dataclass(frozen=True)
class LMConfig:
    """MusicGen transformer decoder over EnCodec codebooks."""

    vocab_size: int = 2048  # codes per codebook; id `vocab_size` is the special (BOS/pad) token
    hidden_size: int = 1024
    num_layers: int = 24
    num_heads: int = 16
    ffn_dim: int = 4096
    num_codebooks: int = 4
    audio_channels: int = 1
    max_position_embeddings: int = 2048
    layer_norm_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def special_token(self) -> int:
        return self.vocab_size

    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> LMConfig:
        act = cfg.get("activation_function", "gelu")
        if act != "gelu":
            raise ValueError(f"unsupported decoder activation {act!r}: only 'gelu'")
        if cfg.get("scale_embedding", False):
            raise ValueError("scale_embedding=True is not used by any MusicGen checkpoint")
        return cls(
            vocab_size=cfg["vocab_size"],
            hidden_size=cfg["hidden_size"],
            num_layers=cfg["num_hidden_layers"],
            num_heads=cfg["num_attention_heads"],
            ffn_dim=cfg["ffn_dim"],
            num_codebooks=cfg["num_codebooks"],
            audio_channels=cfg.get("audio_channels", 1),
            max_position_embeddings=cfg.get("max_position_embeddings", 2048),
        ).checked()

    def checked(self) -> LMConfig:
        """Self, after the checks every source of sizes (config.json, audiocraft shapes) needs."""
        if self.audio_channels not in (1, 2):
            raise ValueError(f"audio_channels must be 1 or 2, got {self.audio_channels}")
        if self.num_codebooks % self.audio_channels:
            raise ValueError(
                f"{self.num_codebooks} codebooks cannot be split into {self.audio_channels} channels"
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"width {self.hidden_size} is not a multiple of {self.num_heads} heads"
            )
        return self


@dataclass(frozen=True)
class EncodecConfig:
    """EnCodec (SEANet encoder/decoder + residual vector quantizer)."""

    sampling_rate: int = 32000
    audio_channels: int = 1
    num_filters: int = 64
    hidden_size: int = 128  # latent dimension
    upsampling_ratios: tuple[int, ...] = (8, 5, 4, 4)
    num_residual_layers: int = 1
    kernel_size: int = 7
    last_kernel_size: int = 7
    residual_kernel_size: int = 3
    dilation_growth_rate: int = 2
    compress: int = 2
    num_lstm_layers: int = 2
    codebook_size: int = 2048
    codebook_dim: int = 128
    num_quantizers: int = 4
    use_conv_shortcut: bool = False
    use_causal_conv: bool = False
    pad_mode: str = "reflect"

    @property
    def hop_length(self) -> int:
        return math.prod(self.upsampling_ratios)

    @property
    def frame_rate(self) -> int:
        return math.ceil(self.sampling_rate / self.hop_length)

    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> EncodecConfig:
        if cfg.get("norm_type", "weight_norm") != "weight_norm":
            raise ValueError(f"unsupported EnCodec norm_type {cfg.get('norm_type')!r}")
        if cfg.get("normalize", False):
            raise ValueError("EnCodec normalize=True (24/48 kHz models) is not supported")
        ratios = tuple(cfg["upsampling_ratios"])
        rate = cfg["sampling_rate"]
        frame_rate = math.ceil(rate / math.prod(ratios))
        bits = math.ceil(math.log2(cfg["codebook_size"]))
        # transformers derives the quantizer count from the last target bandwidth.
        num_q = int(1000 * cfg["target_bandwidths"][-1] // (frame_rate * bits))
        return cls(
            sampling_rate=rate,
            audio_channels=cfg.get("audio_channels", 1),
            num_filters=cfg["num_filters"],
            hidden_size=cfg["hidden_size"],
            upsampling_ratios=ratios,
            num_residual_layers=cfg["num_residual_layers"],
            kernel_size=cfg["kernel_size"],
            last_kernel_size=cfg["last_kernel_size"],
            residual_kernel_size=cfg["residual_kernel_size"],
            dilation_growth_rate=cfg["dilation_growth_rate"],
            compress=cfg["compress"],
            num_lstm_layers=cfg["num_lstm_layers"],
            codebook_size=cfg["codebook_size"],
            codebook_dim=cfg.get("codebook_dim") or cfg["hidden_size"],
            num_quantizers=max(num_q, 1),
            use_conv_shortcut=cfg.get("use_conv_shortcut", True),
            use_causal_conv=cfg.get("use_causal_conv", False),
            pad_mode=cfg.get("pad_mode", "reflect"),
        )


@dataclass(frozen=True)
class MelodyConfig:
    """MusicGen-melody's conditioning: a chroma prefix of `chroma_length` frames (one-hot over
    `num_chroma` pitch classes, projected to the decoder width) before the text."""

    num_chroma: int = 12
    chroma_length: int = 235  # 30 s of chroma at 32 kHz with hop 4096

    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> MelodyConfig:
        return cls(
            num_chroma=cfg.get("num_chroma", 12), chroma_length=cfg.get("chroma_length", 235)
        )


@dataclass(frozen=True)
class MusicGenConfig:
    """The composite model: text encoder, projection, decoder, audio codec."""

    text_encoder: T5Config = field(default_factory=T5Config)
    decoder: LMConfig = field(default_factory=LMConfig)
    audio_encoder: EncodecConfig = field(default_factory=EncodecConfig)
    max_duration: float = 30.0  # seconds per generation window (training length)
    # Set for musicgen-melody: conditioning is a prefix (chroma, then text), no cross-attention.
    melody: MelodyConfig | None = None
    # Whether the checkpoint projects T5's states to the decoder width (`enc_to_dec_proj`), as
    # its own layout decides: transformers' files have one only when the widths differ;
    # audiocraft's text conditioner always has one (`output_proj`).
    text_projection: bool = True

    @property
    def has_projection(self) -> bool:
        return self.text_projection

    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> MusicGenConfig:
        for part in ("text_encoder", "decoder", "audio_encoder"):
            if part not in cfg:
                raise ValueError(f"config.json has no {part!r} section: not a MusicGen checkpoint")
        melody = cfg.get("model_type") == "musicgen_melody"
        text, decoder = T5Config.from_hf(cfg["text_encoder"]), LMConfig.from_hf(cfg["decoder"])
        return cls(
            text_encoder=text,
            decoder=decoder,
            audio_encoder=EncodecConfig.from_hf(cfg["audio_encoder"]),
            melody=MelodyConfig.from_hf(cfg) if melody else None,
            # transformers only creates `enc_to_dec_proj` when the widths differ.
            text_projection=text.d_model != decoder.hidden_size,
        )


def _lm(width: int, layers: int, codebooks: int = 4, channels: int = 1) -> LMConfig:
    # Every official decoder has 64-wide heads and a 4x feed-forward.
    return LMConfig(
        hidden_size=width,
        num_layers=layers,
        num_heads=width // 64,
        ffn_dim=4 * width,
        num_codebooks=codebooks,
        audio_channels=channels,
    )


# The decoders of the official checkpoints (audiocraft's `transformer_lm` sizes). The text
# encoder (t5-base) and the codec (EnCodec 32 kHz, 4 codebooks) are the same for all of them;
# stereo checkpoints run that mono codec once per channel. Melody decoders have no
# cross-attention (a different layout); their sizes are listed for the catalog.
DECODER_PRESETS: dict[str, LMConfig] = {
    "small": _lm(1024, 24),
    "medium": _lm(1536, 48),
    "large": _lm(2048, 48),
    "stereo-small": _lm(1024, 24, codebooks=8, channels=2),
    "stereo-medium": _lm(1536, 48, codebooks=8, channels=2),
    "stereo-large": _lm(2048, 48, codebooks=8, channels=2),
    "melody": _lm(1536, 48),
    "melody-large": _lm(2048, 48),
}


def preset_heads(num_layers: int, hidden_size: int, ffn_dim: int) -> int:
    """Attention heads of a decoder known only from its weight shapes (heads leave no trace in
    them): the official preset with these sizes, else 64-wide heads like every official one."""
    for preset in DECODER_PRESETS.values():
        if (preset.num_layers, preset.hidden_size, preset.ffn_dim) == (
            num_layers,
            hidden_size,
            ffn_dim,
        ):
            return preset.num_heads
    return max(1, hidden_size // 64)
