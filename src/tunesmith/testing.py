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

SIZES = {"tiny": TINY, "small": SMALL}


def hf_config(size: str = "tiny", **decoder_overrides: Any) -> Any:
    """A transformers MusicgenConfig at one of SIZES."""
    from transformers import EncodecConfig, MusicgenConfig, MusicgenDecoderConfig, T5Config

    parts = SIZES[size]
    return MusicgenConfig(
        text_encoder=T5Config(**parts["text_encoder"]).to_dict(),
        audio_encoder=EncodecConfig(**parts["audio_encoder"]).to_dict(),
        decoder=MusicgenDecoderConfig(**{**parts["decoder"], **decoder_overrides}).to_dict(),
    )


def build_hf_model(size: str = "tiny", seed: int = 0, **decoder_overrides: Any) -> Any:
    """transformers' MusicgenForConditionalGeneration with random weights, eval mode.

    The codebooks are filled (random init leaves them at zero, which would make codec tests
    prove nothing), and the tiny decoder is given larger weights so that its logits are far
    apart: greedy parity then tests the arithmetic, not the tie-breaking of near-equal scores.
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
        if size == "tiny":
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

    from .testing_tokenizer import build_test_tokenizer

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
    folder: Path, size: str = "tiny", *, legacy: bool = False, seed: int = 0
) -> Path:
    """Random MusicGen checkpoint folder at `size`, in the hub layout."""
    return save_checkpoint(build_hf_model(size, seed), folder, legacy=legacy)


def read_config_json(folder: Path) -> dict[str, Any]:
    return json.loads((Path(folder) / "config.json").read_text())
