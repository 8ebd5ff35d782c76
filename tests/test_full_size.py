"""Parity at the real facebook/musicgen-small sizes (random weights): `pytest -m slow`.

T5-base, the 24 x 1024 decoder and the 64-filter EnCodec, saved in the hub layout with the
legacy weight-norm names the hub file uses, loaded by tunesmith, compared with transformers.
"""

from __future__ import annotations

import copy

import pytest
import torch

from tunesmith import MusicGen
from tunesmith.testing.checkpoints import build_hf_model, save_checkpoint

pytestmark = pytest.mark.slow

PROMPTS = ["dreamy synth pads over a slow beat", "fast jazz drums"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory):
    reference = build_hf_model("small", seed=0)
    folder = save_checkpoint(reference, tmp_path_factory.mktemp("small"), legacy=True)
    model = MusicGen.from_pretrained(folder, device="cpu")
    return reference, model


def test_config_is_musicgen_small(pair) -> None:
    _, model = pair
    cfg = model.config
    assert (cfg.decoder.num_layers, cfg.decoder.hidden_size, cfg.decoder.num_heads) == (
        24,
        1024,
        16,
    )
    assert (cfg.text_encoder.num_layers, cfg.text_encoder.d_model) == (12, 768)
    assert cfg.audio_encoder.num_filters == 64 and cfg.audio_encoder.num_quantizers == 4
    params = sum(p.numel() for p in model.model.decoder.parameters())
    assert 415e6 < params < 425e6


@torch.no_grad()
def test_text_states_and_logits(pair) -> None:
    reference, model = pair
    ids, mask = model.tokenizer(PROMPTS)
    want = reference.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    want = reference.enc_to_dec_proj(want) * mask[..., None]
    text = model.condition(PROMPTS)
    assert (text.states - want).abs().max() < 1e-4

    tokens = torch.randint(0, 2048, (2, 4, 20))
    out = reference.decoder(
        input_ids=tokens.reshape(8, 20), encoder_hidden_states=want, encoder_attention_mask=mask
    )
    cache = model.model.decoder.new_cache(2, 20, text.states, text.mask)
    logits = model.model.decoder(tokens, cache)
    assert (logits - out.logits.reshape(2, 4, 20, -1)).abs().max() < 1e-4


@torch.no_grad()
def test_greedy_generation_and_waveform(pair) -> None:
    reference, model = pair
    frames = 10
    ids, mask = model.tokenizer(PROMPTS)
    captured = {}
    decode = reference.audio_encoder.decode

    def spy(codes, *args, **kwargs):
        captured["codes"] = codes[0].clone()
        return decode(codes, *args, **kwargs)

    reference.audio_encoder.decode = spy
    audio = reference.generate(
        input_ids=ids,
        attention_mask=mask,
        do_sample=False,
        guidance_scale=3.0,
        max_new_tokens=frames + 3,
    )
    reference.audio_encoder.decode = decode
    codes = model.generate_tokens(PROMPTS, duration=frames / 50, top_k=1)
    assert torch.equal(codes, captured["codes"])
    assert (model.decode(codes) - audio).abs().max() < 1e-4


@torch.no_grad()
def test_encode_matches(pair) -> None:
    reference, model = pair
    wav = 0.2 * torch.randn(1, 1, 32000)
    want = reference.audio_encoder.encode(wav).audio_codes[0]
    assert torch.equal(model.encode(wav), want)


@torch.no_grad()
def test_int8_quality_guard(pair) -> None:
    """Teacher-forced logits of the int8 decoder stay within 3% relative error of fp32."""
    from tunesmith.engine.int8 import quantize_linears

    _, model = pair
    text = model.condition(PROMPTS)
    tokens = torch.randint(0, 2048, (2, 4, 40))
    lm = model.model.decoder
    want = lm(tokens, lm.new_cache(2, 40, text.states, text.mask))
    q = quantize_linears(copy.deepcopy(lm), "int8")
    got = q(tokens, q.new_cache(2, 40, text.states, text.mask))
    rel = float((got - want).norm() / want.norm())
    assert rel < 0.03, rel
