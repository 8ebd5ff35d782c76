"""musicgen-melody (MusicgenMelodyForConditionalGeneration layout) against transformers on tiny
random weights: chroma and text are a prefix of the decoder input, no cross-attention."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.test_family import PROMPTS, reference_generate
from tunesmith import MusicGen
from tunesmith.generation.loop import TextCondition, generate_codes
from tunesmith.models.melody import MusicGenMelodyModel
from tunesmith.options import GenerationOptions
from tunesmith.testing.checkpoints import build_melody_model, save_checkpoint


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory):
    reference = build_melody_model(seed=7)
    folder = save_checkpoint(reference, tmp_path_factory.mktemp("melody"))
    return reference, MusicGen.from_pretrained(folder, device="cpu")


def random_chroma(batch: int, frames: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, 12, (batch, frames, 1), generator=g)
    return torch.zeros(batch, frames, 12).scatter_(-1, idx, 1.0)


def test_loads_as_the_melody_layout(pair) -> None:
    reference, model = pair
    assert isinstance(model.model, MusicGenMelodyModel)
    assert model.config.melody is not None and model.config.melody.chroma_length == 235
    layer = model.model.decoder.layers[0]
    assert not hasattr(layer, "encoder_attn")
    torch.testing.assert_close(
        model.model.decoder.chroma_proj.weight, reference.audio_enc_to_dec_proj.weight
    )


def test_text_only_generation_matches_reference(pair) -> None:
    reference, model = pair
    frames = 12
    want_codes, want_audio = reference_generate(reference, model, frames)
    codes = model.generate_tokens(PROMPTS, duration=frames / 50, top_k=1)
    assert torch.equal(codes, want_codes)
    assert (model.decode(codes) - want_audio).abs().max() < 1e-4


@pytest.mark.parametrize("chroma_frames", [40, 300])  # tiled to 235, and cut to 235
def test_melody_conditioned_generation_matches_reference(pair, chroma_frames: int) -> None:
    reference, model = pair
    frames = 12
    chroma = random_chroma(2, chroma_frames, seed=chroma_frames)
    want_codes, _ = reference_generate(reference, model, frames, chroma=chroma)
    ids, mask = model.tokenizer(PROMPTS)
    with torch.inference_mode():
        states = model.model.encode_text(ids, mask, chroma=chroma)
    options = GenerationOptions(duration=frames / 50, top_k=1)
    codes = generate_codes(model.step, TextCondition(states, mask), frames, options)
    assert torch.equal(codes, want_codes)
    # The melody matters: without it the tokens differ.
    assert not torch.equal(codes, model.generate_tokens(PROMPTS, duration=frames / 50, top_k=1))


def test_teacher_forced_logits_match_reference(pair) -> None:
    reference, model = pair
    ids, mask = model.tokenizer(PROMPTS)
    chroma = random_chroma(2, 50)
    tokens = torch.randint(0, 2048, (2, 4, 9))
    with torch.no_grad():
        want = reference(
            input_ids=ids,
            attention_mask=mask,
            input_features=chroma,
            decoder_input_ids=tokens.reshape(8, 9),
        ).logits.reshape(2, 4, -1, 2048)[:, :, -9:]
    lm = model.model.decoder
    with torch.inference_mode():
        states = model.model.encode_text(ids, mask, chroma=chroma)
        got = lm(tokens, lm.new_cache(2, 9, states, mask))
    assert (got - want).abs().max() < 1e-4


def test_int8_melody_loads_and_runs(pair, tmp_path: Path) -> None:
    """int8 melody: an int8 cache and (where the kernels build) one-frame steps in
    C++ (`CpuKernelStep`), without cross-attention, as close to the layers run one by one as
    ever."""
    from tunesmith.engine.cpu_step import CpuKernelStep
    from tunesmith.kernels.cpu import build

    reference, _ = pair
    folder = save_checkpoint(reference, tmp_path / "m")
    model = MusicGen.from_pretrained(folder, device="cpu", quantize="int8")
    codes = model.generate_tokens(PROMPTS, duration=0.1, top_k=1)
    assert codes.shape == (2, 4, 5)
    lm, step = model.model.decoder, model.step
    if not build.available():
        return
    assert isinstance(step, CpuKernelStep) and step.kernel is not None
    assert step.kernel.sizes[3] == 0
    cond = model.condition(PROMPTS)
    a, b = (step.new_cache(4, 6, cond.states, cond.mask) for _ in range(2))
    assert a.layers[0].self_k.dtype == torch.int8
    with torch.inference_mode():
        for _ in range(5):
            tokens = torch.randint(0, 2048, (4, 4, 1))
            want, got = lm(tokens, a), step(tokens, b)
            assert float((got - want).norm() / want.norm()) < 1e-3


# --- chroma of a reference melody ------------------------------------------------------------


def test_chroma_filter_bank_is_transformers_one() -> None:
    import numpy as np
    from transformers.audio_utils import chroma_filter_bank as reference

    from tunesmith.audio.chroma import chroma_filter_bank

    want = reference(num_frequency_bins=16384, num_chroma=12, sampling_rate=32000, tuning=0)
    np.testing.assert_allclose(chroma_filter_bank(32000), want, rtol=0, atol=1e-12)


def test_power_spectrogram_is_centred_hann_stft() -> None:
    """torchaudio's Spectrogram(n_fft, hop, power=2, normalized=True, center=True), written
    out with numpy: reflect-pad by n_fft / 2, periodic Hann, |rfft|^2 / sum(w^2)."""
    import numpy as np

    from tunesmith.audio.chroma import power_spectrogram

    n_fft, hop = 64, 16
    wav = torch.randn(1, 200, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = np.pad(wav[0].numpy(), n_fft // 2, mode="reflect")
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    frames = [x[i : i + n_fft] * w for i in range(0, len(x) - n_fft + 1, hop)]
    want = np.abs(np.fft.rfft(np.stack(frames), axis=1)).T ** 2 / np.sum(w**2)
    got = power_spectrogram(wav, n_fft=n_fft, hop=hop)[0].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(("hz", "pitch_class"), [(261.63, 0), (392.0, 7), (440.0, 9)])
def test_chroma_of_a_pure_tone(hz: float, pitch_class: int) -> None:
    from tunesmith.audio.chroma import chroma_features, chroma_frames

    t = torch.arange(3 * 32000) / 32000
    chroma = chroma_features(torch.sin(2 * torch.pi * hz * t))
    assert chroma.shape == (1, chroma_frames(3.0), 12)
    assert (chroma.sum(-1) == 1).all()
    assert (chroma.argmax(-1) == pitch_class).all()
    assert chroma_frames(30.0) == 235  # the model's chroma_length


def test_generate_with_a_melody_file(pair, tmp_path: Path) -> None:
    """melody= (a file or a waveform) conditions generation through its chroma, exactly as
    transformers does with the same chroma as input_features."""
    import soundfile as sf

    from tunesmith.audio.chroma import chroma_features

    reference, model = pair
    t = torch.arange(2 * 32000) / 32000
    wav = 0.5 * torch.sin(2 * torch.pi * 392.0 * t) + 0.3 * torch.sin(2 * torch.pi * 523.0 * t)
    path = tmp_path / "melody.wav"
    sf.write(path, wav.numpy(), 32000)
    frames = 10
    codes = model.generate_tokens(PROMPTS, duration=frames / 50, top_k=1, melody=path)
    chroma = chroma_features(wav).expand(2, -1, -1)
    want, _ = reference_generate(reference, model, frames, chroma=chroma)
    assert torch.equal(codes, want)
    same = model.generate_tokens(PROMPTS, duration=frames / 50, top_k=1, melody=wav)
    assert torch.equal(same, codes)


def test_melody_on_a_text_only_model_is_refused(tiny_model: MusicGen) -> None:
    from tunesmith.errors import InvalidOptionError

    with pytest.raises(InvalidOptionError, match="melody"):
        tiny_model.generate_tokens("x", duration=0.1, melody=torch.zeros(32000))


def test_cli_melody_file(pair, tmp_path: Path) -> None:
    """`tunesmith generate --melody FILE` on a melody checkpoint follows the file's chroma:
    the same clip as the API with melody=FILE; a text-only checkpoint refuses it in one line."""
    import soundfile as sf

    from tunesmith.cli.main import main

    reference, model = pair
    t = torch.arange(32000) / 32000
    melody = tmp_path / "tune.wav"
    sf.write(melody, (0.5 * torch.sin(2 * torch.pi * 440.0 * t)).numpy(), 32000)
    folder = save_checkpoint(reference, tmp_path / "ckpt")
    out = tmp_path / "out.wav"
    argv = ["generate", PROMPTS[0], "-o", str(out), "--duration", "0.2", "--top-k", "1"]
    argv += ["--model", str(folder), "--device", "cpu", "--melody", str(melody)]
    argv += ["--normalize", "none", "--wav-subtype", "FLOAT", "--seed", "0"]
    assert main(argv) == 0
    got, rate = sf.read(out, dtype="float32")
    want = model.generate(PROMPTS[0], duration=0.2, top_k=1, melody=melody, seed=0)
    assert rate == 32000
    torch.testing.assert_close(torch.from_numpy(got), want[0, 0], rtol=0, atol=1e-6)


def test_cli_melody_on_text_model_is_one_line(tiny_checkpoint: Path, tmp_path: Path, capsys):
    import soundfile as sf

    from tunesmith.cli.main import main

    melody = tmp_path / "tune.wav"
    sf.write(melody, torch.zeros(8000).numpy(), 32000)
    argv = ["generate", "x", "-o", str(tmp_path / "o.wav"), "--duration", "0.1"]
    argv += ["--model", str(tiny_checkpoint), "--melody", str(melody)]
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "melody" in err
