"""The rest of the family in the hub layout: medium / large decoder shapes, equal widths (no
projection), sharded weights, and stereo (8 codebooks, two interleaved streams), each
against transformers on tiny random weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tunesmith import MusicGen
from tunesmith.generation.delay import apply_delay, delays, undo_delay
from tunesmith.testing.checkpoints import FAMILY, build_family_model, save_checkpoint, save_sharded

PROMPTS = ["lofi hip hop beat with soft piano", "epic orchestral music"]


def reference_generate(reference, model: MusicGen, frames: int, chroma=None):
    """transformers' greedy CFG-3 generation: (codes [B, K, T] as handed to its codec, audio).

    Stereo models call the codec twice (left codebooks 0, 2, ..., right 1, 3, ...): the
    captured halves are interleaved back. chroma: a melody model's `input_features`."""
    calls: list[torch.Tensor] = []
    decode = reference.audio_encoder.decode

    def spy(audio_codes, *args, **kwargs):
        calls.append(audio_codes[0].clone())
        return decode(audio_codes, *args, **kwargs)

    channels = reference.config.decoder.audio_channels
    delay = reference.config.decoder.num_codebooks // channels - 1
    ids, mask = model.tokenizer(PROMPTS)
    extra = {} if chroma is None else {"input_features": chroma}
    reference.audio_encoder.decode = spy
    try:
        with torch.no_grad():
            audio = reference.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=False,
                guidance_scale=3.0,
                max_new_tokens=frames + delay,
                **extra,
            )
    finally:
        reference.audio_encoder.decode = decode
    codes = torch.stack(calls, dim=2).flatten(1, 2)  # [B, K/C, C, T] -> interleaved [B, K, T]
    return codes, audio


@pytest.fixture(scope="module", params=["medium", "large", "equal", "stereo", "stereo-medium"])
def pair(request, tmp_path_factory: pytest.TempPathFactory):
    kind = request.param
    reference = build_family_model(kind, seed=2)
    folder = tmp_path_factory.mktemp(kind)
    if kind == "large":  # the hub's musicgen-large is sharded
        save_sharded(reference, folder)
    else:
        save_checkpoint(reference, folder, legacy=kind == "medium")
    return kind, reference, MusicGen.from_pretrained(folder, device="cpu")


def test_config_follows_config_json(pair) -> None:
    kind, reference, model = pair
    want = {**FAMILY["small"], **FAMILY[kind]}
    cfg = model.config.decoder
    hf = reference.config.decoder
    assert (cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.ffn_dim) == (
        hf.hidden_size,
        hf.num_hidden_layers,
        hf.num_attention_heads,
        hf.ffn_dim,
    )
    assert cfg.num_codebooks == want.get("num_codebooks", 4)
    assert model.audio_channels == want.get("audio_channels", 1)
    has_proj = model.model.enc_to_dec_proj is not None
    assert has_proj == (getattr(reference, "enc_to_dec_proj", None) is not None)
    assert has_proj == (kind != "equal")


def test_greedy_cfg_tokens_and_audio_match_reference(pair) -> None:
    _, reference, model = pair
    frames = 20
    want_codes, want_audio = reference_generate(reference, model, frames)
    codes = model.generate_tokens(PROMPTS, duration=frames / 50, top_k=1)
    assert codes.shape == (2, model.num_codebooks, frames)
    assert torch.equal(codes, want_codes)
    audio = model.decode(codes)
    assert audio.shape == want_audio.shape == (2, model.audio_channels, frames * 640)
    assert (audio - want_audio).abs().max() < 1e-4


def test_teacher_forced_logits_match_reference(pair) -> None:
    _, reference, model = pair
    text = model.condition(PROMPTS)
    k = model.num_codebooks
    tokens = torch.randint(0, 2048, (2, k, 12))
    with torch.no_grad():
        want = reference.decoder(
            input_ids=tokens.reshape(2 * k, 12),
            encoder_hidden_states=text.states,
            encoder_attention_mask=text.mask,
        ).logits.reshape(2, k, 12, -1)
    lm = model.model.decoder
    with torch.inference_mode():
        got = lm(tokens, lm.new_cache(2, 12, text.states, text.mask))
    assert (got - want).abs().max() < 1e-4


@pytest.mark.parametrize("kind", ["stereo"])
def test_stereo_encode_interleaves_left_and_right(kind: str, tmp_path: Path) -> None:
    reference = build_family_model(kind, seed=3)
    model = MusicGen.from_pretrained(save_checkpoint(reference, tmp_path), device="cpu")
    torch.manual_seed(0)
    wav = 0.3 * torch.randn(1, 2, 640 * 8)
    codes = model.encode(wav)
    assert codes.shape == (1, 8, 8)
    with torch.no_grad():
        left = reference.audio_encoder.encode(wav[:, :1]).audio_codes[0]
        right = reference.audio_encoder.encode(wav[:, 1:]).audio_codes[0]
    assert torch.equal(codes[:, 0::2], left)
    assert torch.equal(codes[:, 1::2], right)
    # Each channel decodes on its own: the left half of the audio is the left codes' audio.
    audio = model.decode(codes)
    with torch.no_grad():
        want_left = reference.audio_encoder.decode(left[None], [None]).audio_values
    assert audio.shape == (1, 2, 640 * 8)
    assert (audio[:, :1] - want_left).abs().max() < 1e-4
    with pytest.raises(ValueError, match="2-channel"):
        model.encode(wav[:, :1])


def test_stereo_delay_pattern_matches_reference_mask() -> None:
    """Our delays for 8 interleaved codebooks are transformers' pattern mask."""
    reference = build_family_model("stereo", seed=0)
    decoder = reference.decoder
    length = 12
    start = torch.full((8, 1), 2048)
    _, mask = decoder.build_delay_pattern_mask(start, pad_token_id=2048, max_length=length)
    assert delays(8, channels=2) == [0, 0, 1, 1, 2, 2, 3, 3]
    codes = torch.arange(8 * 8).view(1, 8, 8)
    seq = apply_delay(codes, special=2048, channels=2)
    assert seq.shape == (1, 8, length)
    special = seq[0] == 2048
    assert torch.equal(special, mask == 2048)
    assert torch.equal(undo_delay(seq, channels=2), codes)
