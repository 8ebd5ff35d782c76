"""Continuation of an audio prompt, long form past the 30 s window, streaming."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tunesmith import MusicGen
from tunesmith.errors import InvalidOptionError
from tunesmith.generation import loop as generation
from tunesmith.generation.codec_chunks import StreamDecoder, decode_in_chunks


def snr_db(got: torch.Tensor, want: torch.Tensor) -> float:
    return float(10 * torch.log10(want.pow(2).sum() / (got - want).pow(2).sum().clamp_min(1e-20)))


def test_continuation_starts_exactly_after_prompt_codes(tiny_model: MusicGen) -> None:
    torch.manual_seed(0)
    wav = 0.3 * torch.randn(1, 32000 // 2)  # 0.5 s: 25 frames
    prompt_codes = tiny_model.encode(wav)
    codes = tiny_model.generate_tokens("jazz", duration=0.4, audio_prompt=wav, top_k=1)
    assert codes.shape == (1, 4, 25 + 20)
    assert torch.equal(codes[..., :25], prompt_codes)
    # The new frames are what the decoder makes when prompted with exactly those codes.
    text = tiny_model.condition(["jazz"])
    options = generation.GenerationOptions(duration=0.9, top_k=1)
    want = generation.generate_codes(tiny_model.step, text, 45, options, prompt=prompt_codes)
    assert torch.equal(codes, want)
    new_only = tiny_model.generate_tokens(
        "jazz", duration=0.4, audio_prompt=wav, top_k=1, prompt_in_output=False
    )
    assert torch.equal(new_only, codes[..., 25:])


def test_audio_prompt_file_any_rate_and_channels(tiny_model: MusicGen, tmp_path: Path) -> None:
    path = tmp_path / "prompt.wav"
    t = np.arange(44100 // 2) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 330 * t)], axis=1) * 0.3
    sf.write(path, stereo, 44100)
    wav = tiny_model.generate("x", duration=0.2, audio_prompt=path, seed=1)
    assert wav.shape == (1, 1, (25 + 10) * 640)


def test_prompt_longer_than_window_is_refused(tiny_model: MusicGen) -> None:
    with pytest.raises(InvalidOptionError, match="shorter than the model's 30s window"):
        tiny_model.generate_tokens("x", duration=1.0, audio_prompt=torch.zeros(1, 31 * 32000))


def test_75_seconds_run_through_three_windows_reusing_tokens(
    tiny_model: MusicGen, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[torch.Tensor | None, list[torch.Tensor]]] = []
    real = generation.iter_window

    def spy(step, text, frames, options, generator, prompt=None, transition=None):
        made: list[torch.Tensor] = []
        calls.append((None if prompt is None else prompt.clone(), made))
        for block in real(step, text, frames, options, generator, prompt, transition):
            made.append(block)
            yield block

    monkeypatch.setattr(generation, "iter_window", spy)
    codes = tiny_model.generate_tokens("long ambient piece", duration=75.0, stride=22.5, seed=4)
    assert codes.shape == (1, 4, 3750)
    assert len(calls) == 3
    produced = [torch.cat(made, dim=2) for _, made in calls]
    assert [p.shape[-1] for p in produced] == [1500, 1125, 1125]
    assert calls[0][0] is None
    # Each later window is prompted with the last 30 - 22.5 = 7.5 s (375 frames) made so far.
    for i in (1, 2):
        so_far = torch.cat(produced[:i], dim=2)
        assert torch.equal(calls[i][0], so_far[..., -375:])
    assert torch.equal(torch.cat(produced, dim=2), codes)


def test_default_stride_window_plan() -> None:
    plan = generation.plan_windows(0, 3750, 1500, 900)
    assert [(w.context, w.frames) for w in plan] == [
        (0, 1500),
        (600, 1500),
        (600, 1500),
        (600, 1050),
    ]


def test_chunked_decode_matches_whole_decode(tiny_model: MusicGen) -> None:
    codes = tiny_model.generate_tokens("drums", duration=4.0, seed=2)
    whole = tiny_model._decode_window(codes)
    chunked = decode_in_chunks(tiny_model._decode_window, codes, 640, chunk=60, context=50)
    assert chunked.shape == whole.shape
    assert snr_db(chunked, whole) > 40


def test_stream_equals_generate(tiny_model: MusicGen) -> None:
    steps: list[int] = []
    first_chunk_at: list[int] = []
    chunks = []
    for chunk in tiny_model.stream(
        "piano", duration=3.0, chunk_seconds=0.5, seed=9, progress=lambda d, t: steps.append(d)
    ):
        if not chunks:
            first_chunk_at.append(steps[-1])
        chunks.append(chunk)
    streamed = torch.cat(chunks, dim=-1)
    whole = tiny_model.generate("piano", duration=3.0, seed=9)
    assert streamed.shape == whole.shape == (1, 1, 3 * 32000)
    assert snr_db(streamed, whole) > 40
    # The first audio comes after about one chunk of steps (25 frames + lookahead + delay),
    # not after the 153 steps of the whole clip.
    assert first_chunk_at[0] <= 25 + 10 + 3
    assert len(chunks) >= 6


def test_stream_with_audio_prompt(tiny_model: MusicGen) -> None:
    wav = 0.3 * torch.randn(1, 16000)
    streamed = torch.cat(list(tiny_model.stream("x", 0.5, audio_prompt=wav, seed=1)), dim=-1)
    whole = tiny_model.generate("x", 0.5, audio_prompt=wav, seed=1)
    assert streamed.shape == whole.shape == (1, 1, 32000)
    assert snr_db(streamed, whole) > 40
    dropped = torch.cat(
        list(tiny_model.stream("x", 0.5, audio_prompt=wav, seed=1, prompt_in_output=False)), -1
    )
    assert dropped.shape == (1, 1, 16000)


def test_stream_decoder_flushes_short_input() -> None:
    decoder = StreamDecoder(lambda c: c.float().repeat_interleave(2, -1)[:, :1], 2, chunk=10)
    assert decoder.push(torch.ones(1, 4, 3, dtype=torch.long)) == []
    tail = decoder.finish()
    assert tail is not None and tail.shape == (1, 1, 6)
    assert decoder.finish() is None


def test_an_audio_prompt_given_as_codes_is_continued_as_its_waveform(
    tiny_model: MusicGen,
) -> None:
    """Codes (a long tensor [B, K, P]) prompt as the waveform they were encoded from does."""
    torch.manual_seed(1)
    wav = 0.3 * torch.randn(1, 32000 // 2)
    codes = tiny_model.encode(wav)
    by_wave = tiny_model.generate_tokens(["a", "b"], duration=0.3, audio_prompt=wav, top_k=1)
    by_codes = tiny_model.generate_tokens(["a", "b"], duration=0.3, audio_prompt=codes, top_k=1)
    assert torch.equal(by_codes, by_wave)
    assert torch.equal(by_codes[..., :25], codes.expand(2, -1, -1))


@pytest.mark.parametrize(
    ("codes", "message"),
    [
        (torch.zeros(1, 3, 10, dtype=torch.long), r"codes must be \[batch, 4, frames\]"),
        (torch.zeros(4, 10, dtype=torch.long), r"codes must be \[batch, 4, frames\]"),
        (torch.zeros(3, 4, 10, dtype=torch.long), "3 rows for 2 prompts"),
        (torch.zeros(1, 4, 0, dtype=torch.long), "at least one"),
        (torch.zeros(1, 4, 1500, dtype=torch.long), "fewer than the model's 1500-frame window"),
        (torch.full((1, 4, 10), 2048), r"tokens in \[0, 2048\)"),
        (torch.full((1, 4, 10), -1), r"tokens in \[0, 2048\)"),
    ],
)
def test_bad_prompt_codes_are_refused(
    tiny_model: MusicGen, codes: torch.Tensor, message: str
) -> None:
    with pytest.raises(InvalidOptionError, match=message):
        tiny_model.generate_tokens(["a", "b"], duration=0.1, audio_prompt=codes)
