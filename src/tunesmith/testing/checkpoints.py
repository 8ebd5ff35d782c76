"""Random checkpoints in the official layouts, for tests and benchmarks (no hub needed).

Needs the test extras (`transformers`, `sentencepiece`): the checkpoints are made by
transformers' own MusicGen classes and `save_pretrained`, so loading them exercises the same
code paths as the real `facebook/musicgen-small` files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

# Sizes that keep the default suite fast but leave every code path in play: the T5 and
# decoder widths differ (so `enc_to_dec_proj` exists, as in the real model), 4 codebooks
# of 2048 codes, the real hop of 640 samples.
TINY: dict[str, dict[str, Any]] = {
    "text_encoder": dict(
        vocab_size=512,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        feed_forward_proj="relu",
        tie_word_embeddings=True,
    ),
    "audio_encoder": dict(
        sampling_rate=32000,
        audio_channels=1,
        num_filters=4,
        hidden_size=16,
        upsampling_ratios=[8, 5, 4, 4],
        codebook_size=2048,
        codebook_dim=16,
        target_bandwidths=[2.2],
        use_causal_conv=False,
        use_conv_shortcut=False,
        pad_mode="reflect",
        norm_type="weight_norm",
        normalize=False,
        num_lstm_layers=2,
        chunk_length_s=None,
        overlap=None,
    ),
    "decoder": dict(
        vocab_size=2048,
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        ffn_dim=96,
        num_codebooks=4,
        max_position_embeddings=2048,
        audio_channels=1,
    ),
}

# The real facebook/musicgen-small sizes (t5-base, 24 x 1024 decoder, 64-filter EnCodec).
SMALL: dict[str, dict[str, Any]] = {
    "text_encoder": dict(
        vocab_size=32128,
        d_model=768,
        d_kv=64,
        d_ff=3072,
        num_layers=12,
        num_heads=12,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        feed_forward_proj="relu",
        tie_word_embeddings=True,
    ),
    "audio_encoder": dict(
        TINY["audio_encoder"],
        num_filters=64,
        hidden_size=128,
        codebook_dim=128,
    ),
    "decoder": dict(
        vocab_size=2048,
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        ffn_dim=4096,
        num_codebooks=4,
        max_position_embeddings=2048,
        audio_channels=1,
    ),
}

# facebook/musicgen-medium: the same T5 and EnCodec, a 48 x 1536 decoder (1.5 B parameters).
MEDIUM: dict[str, dict[str, Any]] = {
    **SMALL,
    "decoder": dict(
        SMALL["decoder"],
        hidden_size=1536,
        num_hidden_layers=48,
        num_attention_heads=24,
        ffn_dim=6144,
    ),
}

SIZES = {"tiny": TINY, "small": SMALL, "medium": MEDIUM}


def hf_config(size: str = "tiny", **decoder_overrides: Any) -> Any:
    """A transformers MusicgenConfig at one of SIZES."""
    from transformers import EncodecConfig, MusicgenConfig, MusicgenDecoderConfig, T5Config

    parts = SIZES[size]
    return MusicgenConfig(
        text_encoder=T5Config(**parts["text_encoder"]).to_dict(),
        audio_encoder=EncodecConfig(**parts["audio_encoder"]).to_dict(),
        decoder=MusicgenDecoderConfig(**{**parts["decoder"], **decoder_overrides}).to_dict(),
    )


def build_hf_model(
    size: str = "tiny", seed: int = 0, spread: bool = True, **decoder_overrides: Any
) -> Any:
    """transformers' MusicgenForConditionalGeneration with random weights, eval mode.

    The codebooks are filled (random init leaves them at zero, which would make codec tests
    prove nothing), and the tiny decoder is given larger weights so that its logits are far
    apart: greedy parity then tests the arithmetic, not the tie-breaking of near-equal scores.
    spread=False keeps transformers' own initialisation (a loss near ln 2048 at the start,
    as a real model's first step of training has).
    """
    from transformers import MusicgenForConditionalGeneration

    torch.manual_seed(seed)
    model = MusicgenForConditionalGeneration(hf_config(size, **decoder_overrides)).eval()
    with torch.no_grad():
        for name, tensor in model.audio_encoder.state_dict(keep_vars=True).items():
            if name.endswith("codebook.embed"):
                tensor.normal_()
            elif name.endswith("codebook.inited"):
                tensor.fill_(1.0)
        if size == "tiny" and spread:
            for name, param in model.decoder.named_parameters():
                if "lm_heads" in name:
                    param.normal_(0.0, 1.0)
                elif param.dim() == 2:
                    param.normal_(0.0, 0.2)
    return model


def save_checkpoint(model: Any, folder: Path, *, legacy: bool = False) -> Path:
    """Write `model` in the hub layout: config.json, generation_config.json, model.safetensors,
    and a real (small) T5 sentencepiece tokenizer with its tokenizer.json.

    legacy=True rewrites the weights the way the hub file has them: EnCodec weight norm as
    `weight_g` / `weight_v`, the stored positional table, and both copies of the tied T5
    embedding.
    """
    from safetensors.torch import load_file, save_file

    from .tokenizer import build_test_tokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    build_test_tokenizer(folder)
    if legacy:
        path = folder / "model.safetensors"
        state = load_file(str(path))
        old: dict[str, torch.Tensor] = {}
        for key, value in state.items():
            key = key.replace(".parametrizations.weight.original0", ".weight_g")
            key = key.replace(".parametrizations.weight.original1", ".weight_v")
            old[key] = value.contiguous()
        decoder = model.decoder.model.decoder
        old["decoder.model.decoder.embed_positions.weights"] = (
            decoder.embed_positions.weights.clone()
        )
        old["text_encoder.encoder.embed_tokens.weight"] = old["text_encoder.shared.weight"].clone()
        save_file(old, str(path), metadata={"format": "pt"})
    return folder


def build_checkpoint(
    folder: Path,
    size: str = "tiny",
    *,
    legacy: bool = False,
    seed: int = 0,
    fitted_codec: bool = False,
    spread: bool = True,
) -> Path:
    """Random MusicGen checkpoint folder at `size`, in the hub layout. fitted_codec: the
    codebooks drawn from the encoder's own outputs on varied audio (see fit_codebooks);
    spread: see build_hf_model."""
    model = build_hf_model(size, seed, spread)
    if fitted_codec:
        fit_codebooks(model, seed)
    return save_checkpoint(model, folder, legacy=legacy)


def fit_codebooks(model: Any, seed: int = 0, seconds: float = 20.0) -> None:
    """Give a random codec codes that tell sounds apart, as a trained one has.

    Random codebooks (unit normal) lie far from a random encoder's small outputs, so every
    sound quantizes to the same one or two codes. Here each codebook of the residual stack is
    drawn from the residuals it will see on varied audio (tones, sweeps, noise, pulses): the
    first step of k-means. Used where a test needs different audio to give different codes
    (the fine-tuning learning test)."""
    generator = torch.Generator().manual_seed(seed)
    rate = model.config.audio_encoder.sampling_rate
    t = torch.arange(int(rate * seconds / 4)) / rate
    pieces = []
    for f in (55.0, 220.0, 880.0, 3520.0):
        pieces.append(0.5 * torch.sin(2 * torch.pi * f * t))
        pieces.append(0.5 * torch.sin(2 * torch.pi * (f + f * 4 * t) * t))
        pieces.append(0.3 * torch.randn(t.shape, generator=generator) * (t * f % 1 < 0.3))
    audio = torch.cat(pieces)[None, None]
    codec = model.audio_encoder
    with torch.no_grad():
        residual = codec.encoder(audio)[0].t()  # [frames, dim]
        for layer in codec.quantizer.layers:
            book = layer.codebook
            rows = torch.randint(0, residual.shape[0], (book.embed.shape[0],), generator=generator)
            jitter = 0.01 * residual.std() * torch.randn(book.embed.shape, generator=generator)
            book.embed.copy_(residual[rows] + jitter)
            book.embed_avg.copy_(book.embed)
            indices = ((residual[:, None] - book.embed[None]) ** 2).sum(-1).argmin(-1)
            residual = residual - book.embed[indices]


def read_config_json(folder: Path) -> dict[str, Any]:
    return json.loads((Path(folder) / "config.json").read_text())


# --- the rest of the family, at tiny sizes --------------------------------------------------

# Decoder overrides of TINY with the shapes of the bigger checkpoints: deeper and wider
# decoders with 4x feed-forwards, T5 width below the decoder's (so `enc_to_dec_proj` exists, as
# in every official checkpoint); "equal" has no projection (transformers then creates none);
# "stereo" has two interleaved 4-codebook streams.
FAMILY: dict[str, dict[str, Any]] = {
    "small": {},
    "medium": dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, ffn_dim=256),
    "large": dict(hidden_size=96, num_hidden_layers=3, num_attention_heads=6, ffn_dim=384),
    "equal": dict(hidden_size=32, num_attention_heads=4, ffn_dim=128),
    "stereo": dict(num_codebooks=8, audio_channels=2),
    "stereo-medium": dict(
        hidden_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        ffn_dim=256,
        num_codebooks=8,
        audio_channels=2,
    ),
}


def build_family_model(kind: str, seed: int = 0) -> Any:
    """transformers' MusicGen at TINY sizes with the decoder shaped like `kind` (see FAMILY)."""
    return build_hf_model("tiny", seed, **FAMILY[kind])


def save_sharded(model: Any, folder: Path, max_shard_size: str = "200KB") -> Path:
    """Like save_checkpoint, with the weights split into shards plus
    `model.safetensors.index.json`, as the hub has musicgen-large."""
    from .tokenizer import build_test_tokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True, max_shard_size=max_shard_size)
    build_test_tokenizer(folder)
    return folder


def round_lm_through_fp16(model: Any) -> Any:
    """A deep copy whose decoder and text projection hold fp16-representable values (what
    audiocraft's fp16 LM file carries), stored as float32."""
    import copy

    rounded = copy.deepcopy(model)
    with torch.no_grad():
        parts = [rounded.decoder] + ([rounded.enc_to_dec_proj] if _has_proj(rounded) else [])
        for part in parts:
            for param in part.parameters():
                param.copy_(param.half().float())
    return rounded


def _has_proj(model: Any) -> bool:
    return getattr(model, "enc_to_dec_proj", None) is not None


# --- audiocraft's files, written from a transformers model -----------------------------------
# The inverse of transformers' convert_musicgen_transformers.py / convert_encodec_checkpoint:
# stated here from the Hugging Face side, independently of tunesmith.audiocraft_keys.

_AC_LAYER = {
    "self_attn_layer_norm": "norm1",
    "encoder_attn_layer_norm": "norm_cross",
    "final_layer_norm": "norm2",
    "fc1": "linear1",
    "fc2": "linear2",
    "self_attn.out_proj": "self_attn.out_proj",
    "encoder_attn.out_proj": "cross_attention.out_proj",
}


def audiocraft_lm_state(model: Any, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """The LM as audiocraft's `best_state`: fused q|k|v, its names, `dtype` weights."""
    out: dict[str, torch.Tensor] = {}
    lm = model.decoder.model.decoder
    for k, emb in enumerate(lm.embed_tokens):
        out[f"emb.{k}.weight"] = emb.weight
    for n, layer in enumerate(lm.layers):
        pre = f"transformer.layers.{n}"
        for ours, theirs in (("self_attn", "self_attn"), ("encoder_attn", "cross_attention")):
            attn = getattr(layer, ours)
            fused = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
            out[f"{pre}.{theirs}.in_proj_weight"] = fused
        for name, tensor in layer.state_dict().items():
            for hf, ac in _AC_LAYER.items():
                if name.startswith(hf + "."):
                    out[f"{pre}.{ac}{name[len(hf) :]}"] = tensor
    for name, tensor in lm.layer_norm.state_dict().items():
        out[f"out_norm.{name}"] = tensor
    for k, head in enumerate(model.decoder.lm_heads):
        out[f"linears.{k}.weight"] = head.weight
    if _has_proj(model):
        for name, tensor in model.enc_to_dec_proj.state_dict().items():
            out[f"condition_provider.conditioners.description.output_proj.{name}"] = tensor
    return {k: v.detach().to(dtype).contiguous().clone() for k, v in out.items()}


def audiocraft_codec_state(model: Any) -> dict[str, torch.Tensor]:
    """EnCodec as audiocraft's compression `best_state`: `encoder.model.N.conv.conv.weight_g`,
    `decoder.model.N.convtr.convtr.*`, `quantizer.vq.layers.Q._codebook.*`."""
    import re

    codec = model.audio_encoder
    transposed = {
        i for i, layer in enumerate(codec.decoder.layers) if "Transpose" in type(layer).__name__
    }
    out: dict[str, torch.Tensor] = {}
    for name, tensor in codec.state_dict().items():
        name = name.replace(".parametrizations.weight.original0", ".weight_g")
        name = name.replace(".parametrizations.weight.original1", ".weight_v")
        if name.startswith("quantizer."):
            name = re.sub(
                r"^quantizer\.layers\.(\d+)\.codebook\.", r"quantizer.vq.layers.\1._codebook.", name
            )
        else:
            m = re.match(r"^(encoder|decoder)\.layers\.(\d+)\.(.*)$", name)
            assert m is not None, name
            part, index, rest = m.group(1), int(m.group(2)), m.group(3)
            if rest.startswith("conv."):
                kind = "convtr" if part == "decoder" and index in transposed else "conv"
                rest = f"{kind}.{kind}.{rest[len('conv.') :]}"
            else:  # block.J.conv.*, shortcut.conv.*, lstm.*
                rest = re.sub(r"(block\.\d+|shortcut)\.conv\.", r"\1.conv.conv.", rest)
            name = f"{part}.model.{index}.{rest}"
        out[name] = tensor.detach().contiguous().clone()
    return out


def audiocraft_xp_cfg(model: Any, segment_duration: float = 30.0) -> str:
    """The few parts of audiocraft's training config (YAML text, as its export writes it)."""
    import yaml

    cfg = model.config.decoder
    stereo = cfg.audio_channels == 2
    books = cfg.num_codebooks // cfg.audio_channels
    delays = [k // cfg.audio_channels for k in range(cfg.num_codebooks)]
    xp = {
        "transformer_lm": {
            "dim": cfg.hidden_size,
            "num_heads": cfg.num_attention_heads,
            "num_layers": cfg.num_hidden_layers,
            "hidden_scale": cfg.ffn_dim // cfg.hidden_size,
            "n_q": cfg.num_codebooks,
            "card": cfg.vocab_size,
            "norm": "layer_norm",
            "norm_first": True,
            "activation": "gelu",
            "positional_embedding": "sin",
            "positional_scale": 1.0,
            "bias_proj": False,
            "bias_ff": False,
            "bias_attn": False,
        },
        "codebooks_pattern": {"modeling": "delay", "delay": {"delays": delays}},
        "interleave_stereo_codebooks": {"use": stereo, "per_timestep": False},
        "compression_model_n_q": books,
        "dataset": {"segment_duration": segment_duration, "sample_rate": 32000},
        "conditioners": {"description": {"model": "t5", "t5": {"name": "t5-base"}}},
        "fuser": {"cross_attention_pos_emb": False, "cross": ["description"]},
    }
    return yaml.safe_dump(xp)


def save_audiocraft_checkpoint(
    model: Any,
    folder: Path,
    *,
    with_cfg: bool = True,
    codec_pointer: str | None = None,
    codec_cfg: dict[str, Any] | None = None,
) -> Path:
    """Write `model` as audiocraft's files: `state_dict.bin` (fp16 LM, `xp.cfg` as YAML text
    unless with_cfg=False) and `compression_state_dict.bin` (EnCodec with weight_g / weight_v,
    or, with codec_pointer, just `{"pretrained": codec_pointer}`; `codec_cfg` goes into its
    `xp.cfg`, as audiocraft's training config). No T5, no tokenizer."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lm_pkg: dict[str, Any] = {"best_state": audiocraft_lm_state(model)}
    if with_cfg:
        lm_pkg["xp.cfg"] = audiocraft_xp_cfg(model)
    lm_pkg.update(version="1.3.0", exported=True)
    torch.save(lm_pkg, folder / "state_dict.bin")
    codec_pkg: dict[str, Any]
    if codec_pointer is not None:
        codec_pkg = {"pretrained": codec_pointer, "exported": True, "version": "1.3.0"}
    else:
        import yaml

        xp = yaml.safe_dump({"sample_rate": 32000, **(codec_cfg or {})})
        codec_pkg = {"best_state": audiocraft_codec_state(model), "xp.cfg": xp}
    torch.save(codec_pkg, folder / "compression_state_dict.bin")
    return folder


def save_audiocraft_melody_copy(folder: Path, out: Path) -> Path:
    """A copy of audiocraft files `folder` whose LM carries a melody conditioner (the chroma
    projection audiocraft's melody checkpoints have), in `out`: what loaders refuse to take
    as a text-only model."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    codec = "compression_state_dict.bin"
    (out / codec).write_bytes((Path(folder) / codec).read_bytes())
    pkg = torch.load(Path(folder) / "state_dict.bin", weights_only=True)
    key = "condition_provider.conditioners.self_wav.output_proj.weight"
    pkg["best_state"][key] = torch.ones(4, 12)
    torch.save(pkg, out / "state_dict.bin")
    return out


def save_text_encoder(model: Any, folder: Path) -> Path:
    """A T5 checkpoint folder like t5-base on the hub (T5ForConditionalGeneration: encoder,
    decoder, tied embedding, tokenizer) whose encoder is `model.text_encoder`."""
    from transformers import T5ForConditionalGeneration

    from .tokenizer import build_test_tokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    t5 = T5ForConditionalGeneration(model.config.text_encoder).eval()
    t5.encoder.load_state_dict(model.text_encoder.encoder.state_dict())
    with torch.no_grad():
        t5.shared.weight.copy_(model.text_encoder.shared.weight)
    t5.save_pretrained(folder, safe_serialization=True)
    build_test_tokenizer(folder)
    return folder


# --- musicgen-melody -------------------------------------------------------------------------


def build_melody_model(seed: int = 0, **decoder_overrides: Any) -> Any:
    """transformers' MusicgenMelodyForConditionalGeneration at TINY sizes, random weights
    (codebooks filled, decoder weights enlarged as in build_hf_model), eval mode."""
    from transformers import (
        EncodecConfig,
        MusicgenMelodyConfig,
        MusicgenMelodyDecoderConfig,
        MusicgenMelodyForConditionalGeneration,
        T5Config,
    )

    config = MusicgenMelodyConfig(
        text_encoder=T5Config(**TINY["text_encoder"]).to_dict(),
        audio_encoder=EncodecConfig(**TINY["audio_encoder"]).to_dict(),
        decoder=MusicgenMelodyDecoderConfig(**{**TINY["decoder"], **decoder_overrides}).to_dict(),
    )
    torch.manual_seed(seed)
    model = MusicgenMelodyForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, tensor in model.audio_encoder.state_dict(keep_vars=True).items():
            if name.endswith("codebook.embed"):
                tensor.normal_()
            elif name.endswith("codebook.inited"):
                tensor.fill_(1.0)
        for name, param in model.decoder.named_parameters():
            if "lm_heads" in name:
                param.normal_(0.0, 1.0)
            elif param.dim() == 2:
                param.normal_(0.0, 0.2)
        model.audio_enc_to_dec_proj.weight.normal_(0.0, 1.0)
    return model
