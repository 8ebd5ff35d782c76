"""End-to-end parity with transformers on a tiny random checkpoint, and the public API."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from tunesmith import MusicGen
from tunesmith.errors import InvalidOptionError

PROMPTS = ["lofi hip hop beat with soft piano", "epic orchestral music"]


@contextmanager
def captured_codes(reference) -> Iterator[dict]:
    """Record the codes transformers' generate hands to its codec."""
    captured: dict = {}
    decode = reference.audio_encoder.decode

    def spy(audio_codes, *args, **kwargs):
        captured["codes"] = audio_codes[0].clone()
        return decode(audio_codes, *args, **kwargs)

    reference.audio_encoder.decode = spy
    try:
        yield captured
    finally:
        reference.audio_encoder.decode = decode


def reference_generate(reference, model: MusicGen, prompts, frames: int, **sampling):
    """transformers' generation with CFG 3; returns (codes [B, K, T], audio [B, 1, N])."""
    ids, mask = model.tokenizer(prompts)
    sampling = sampling or {"do_sample": False}
    with captured_codes(reference) as captured, torch.no_grad():
        audio = reference.generate(
            input_ids=ids,
            attention_mask=mask,
            guidance_scale=3.0,
            max_new_tokens=frames + 3,
            **sampling,
        )
    return captured["codes"], audio


def test_text_states_match_reference(tiny_model: MusicGen, tiny_reference) -> None:
    ids, mask = tiny_model.tokenizer(PROMPTS)
    assert mask[0].sum() != mask[1].sum(), "prompts should differ in length"
    with torch.no_grad():
        want = reference_text_states(tiny_reference, ids, mask)
    got = tiny_model.condition(PROMPTS).states
    assert (got - want).abs().max() < 1e-4


def reference_text_states(reference, ids, mask):
    states = reference.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    states = reference.enc_to_dec_proj(states)
    return states * mask[..., None]


def test_greedy_cfg_generation_matches_reference(tiny_model: MusicGen, tiny_reference) -> None:
    frames = 25
    want_codes, want_audio = reference_generate(tiny_reference, tiny_model, PROMPTS, frames)
    codes = tiny_model.generate_tokens(PROMPTS, duration=frames / 50, top_k=1)
    assert codes.shape == (2, 4, frames)
    assert torch.equal(codes, want_codes)
    audio = tiny_model.decode(codes)
    assert audio.shape == want_audio.shape == (2, 1, frames * 640)
    assert (audio - want_audio).abs().max() < 1e-4


def test_generate_returns_audio_of_the_asked_duration(tiny_model: MusicGen) -> None:
    wav = tiny_model.generate("a calm guitar", duration=0.5, seed=3)
    assert wav.shape == (1, 1, 16000)
    assert wav.dtype == torch.float32
    assert torch.isfinite(wav).all()


def test_seed_makes_calls_reproducible(tiny_model: MusicGen) -> None:
    a = tiny_model.generate_tokens(PROMPTS, duration=0.4, seed=11)
    b = tiny_model.generate_tokens(PROMPTS, duration=0.4, seed=11)
    c = tiny_model.generate_tokens(PROMPTS, duration=0.4, seed=12)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_sampling_matches_reference_with_same_random_stream(tiny_model, tiny_reference) -> None:
    """Same logits and the same draws: top-k/temperature sampling picks the same tokens."""
    frames = 12
    torch.manual_seed(5)
    want, _ = reference_generate(
        tiny_reference, tiny_model, PROMPTS, frames, do_sample=True, top_k=50, temperature=1.3
    )
    from tunesmith.generation.loop import generate_codes
    from tunesmith.options import GenerationOptions

    torch.manual_seed(5)
    options = GenerationOptions(duration=frames / 50, top_k=50, temperature=1.3)
    text = tiny_model.condition(PROMPTS)
    gen = torch.default_generator
    codes = generate_codes(tiny_model.step, text, frames, options, generator=gen)
    assert torch.equal(codes, want)


def test_unconditional_prompts(tiny_model: MusicGen) -> None:
    a = tiny_model.generate_tokens([None, ""], duration=0.3, top_k=1)
    assert torch.equal(a[0], a[1])  # None and "" are the same: no text at all
    b = tiny_model.generate_tokens(None, duration=0.3, top_k=1)
    assert torch.equal(a[:1], b)


def test_encode_decode_shapes_and_reference_codes(tiny_model: MusicGen, tiny_reference) -> None:
    torch.manual_seed(0)
    wav = 0.3 * torch.randn(1, 1, 640 * 10)
    codes = tiny_model.encode(wav)
    assert codes.shape == (1, 4, 10)
    with torch.no_grad():
        want = tiny_reference.audio_encoder.encode(wav).audio_codes[0]
    assert torch.equal(codes, want)
    assert tiny_model.decode(codes).shape == (1, 1, 6400)


def test_attributes(tiny_model: MusicGen) -> None:
    assert tiny_model.sample_rate == 32000
    assert tiny_model.frame_rate == 50
    assert tiny_model.num_codebooks == 4


@pytest.mark.parametrize(
    "kwargs",
    [
        {"duration": 0},
        {"duration": -1.0},
        {"duration": float("nan")},
        {"duration": 3601.0},
        {"stride": 0.0},
        {"stride": 31.0},
        {"top_k": -1},
        {"top_p": 1.5},
        {"top_p": -0.1},
        {"temperature": 0.0},
    ],
)
def test_bad_options_are_refused(tiny_model: MusicGen, kwargs) -> None:
    args = {"duration": 1.0, **kwargs}
    with pytest.raises(InvalidOptionError):
        tiny_model.generate("x", **args)


def test_bad_prompts_are_refused(tiny_model: MusicGen) -> None:
    with pytest.raises(InvalidOptionError):
        tiny_model.generate([], duration=0.1)
    with pytest.raises(InvalidOptionError):
        tiny_model.generate([3], duration=0.1)  # type: ignore[list-item]
