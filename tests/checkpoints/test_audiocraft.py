"""audiocraft's files (`state_dict.bin` + `compression_state_dict.bin`): the same random weights
written in both layouts load to the same model, and so give the same logits, tokens and audio.

audiocraft stores the LM in fp16, so the hub-layout twin has its decoder rounded through fp16
too; after that the two loads must agree exactly.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.test_family import PROMPTS, reference_generate
from tunesmith import MusicGen
from tunesmith.checkpoints import audiocraft_keys
from tunesmith.checkpoints.loading import load_checkpoint
from tunesmith.config import DECODER_PRESETS, EncodecConfig, LMConfig
from tunesmith.engine.prepare import build_step
from tunesmith.errors import CheckpointError, ModelNotFoundError
from tunesmith.testing.checkpoints import (
    audiocraft_codec_state,
    audiocraft_lm_state,
    build_family_model,
    build_hf_model,
    hf_config,
    round_lm_through_fp16,
    save_audiocraft_checkpoint,
    save_audiocraft_melody_copy,
    save_checkpoint,
    save_text_encoder,
)

CPU = torch.device("cpu")


def load_audiocraft(folder: Path, text_encoder: Path) -> MusicGen:
    model, tokenizer = load_checkpoint(folder, CPU, torch.float32, text_encoder=text_encoder)
    return MusicGen(model, tokenizer, step=build_step(model.decoder))  # as from_pretrained


@pytest.fixture(scope="module", params=["small", "stereo"])
def family(request, tmp_path_factory: pytest.TempPathFactory):
    """(kind, transformers reference with fp16-rounded LM, hub twin, audiocraft folder, T5 folder)."""
    kind = request.param
    original = build_family_model(kind, seed=4)
    reference = round_lm_through_fp16(original)
    root = tmp_path_factory.mktemp(f"audiocraft-{kind}")
    hub = MusicGen.from_pretrained(save_checkpoint(reference, root / "hub"), device="cpu")
    folder = save_audiocraft_checkpoint(original, root / "audiocraft")
    t5 = save_text_encoder(original, root / "t5-base")
    return kind, reference, hub, folder, t5


def test_files_are_what_audiocraft_writes(family) -> None:
    _, _, _, folder, _ = family
    assert sorted(p.name for p in folder.iterdir()) == [
        "compression_state_dict.bin",
        "state_dict.bin",
    ]
    lm = torch.load(folder / "state_dict.bin", weights_only=True)
    assert isinstance(lm["xp.cfg"], str)
    assert lm["best_state"]["transformer.layers.0.self_attn.in_proj_weight"].dtype == torch.float16
    codec = torch.load(folder / "compression_state_dict.bin", weights_only=True)
    assert "encoder.model.0.conv.conv.weight_g" in codec["best_state"]
    assert "decoder.model.3.convtr.convtr.weight_v" in codec["best_state"]


def test_both_layouts_load_the_same_weights(family) -> None:
    kind, _, hub, folder, t5 = family
    ours = load_audiocraft(folder, t5)
    assert ours.config == hub.config
    assert ours.audio_channels == (2 if kind == "stereo" else 1)
    want, got = hub.model.state_dict(), ours.model.state_dict()
    assert want.keys() == got.keys()
    for name in want:
        assert torch.equal(got[name], want[name]), name


def test_same_logits_tokens_and_audio_from_both_layouts(family) -> None:
    _, reference, hub, folder, t5 = family
    ours = load_audiocraft(folder, t5)
    text = ours.condition(PROMPTS)
    k = ours.num_codebooks
    tokens = torch.randint(0, 2048, (2, k, 10))
    with torch.inference_mode():
        a = hub.model.decoder(tokens, hub.model.decoder.new_cache(2, 10, text.states, text.mask))
        b = ours.model.decoder(tokens, ours.model.decoder.new_cache(2, 10, text.states, text.mask))
    assert torch.equal(a, b)

    frames = 15
    codes = ours.generate_tokens(PROMPTS, duration=frames / 50, top_k=1)
    assert torch.equal(codes, hub.generate_tokens(PROMPTS, duration=frames / 50, top_k=1))
    want_codes, want_audio = reference_generate(reference, ours, frames)
    assert torch.equal(codes, want_codes)
    audio = ours.decode(codes)
    assert torch.equal(audio, hub.decode(codes))
    assert (audio - want_audio).abs().max() < 1e-4


def test_text_encoder_from_a_musicgen_hub_folder(family, tmp_path: Path) -> None:
    """The T5 part of a hub-layout MusicGen folder serves as the text encoder too."""
    _, reference, hub, folder, _ = family
    musicgen_folder = save_checkpoint(reference, tmp_path / "musicgen")
    ours = load_audiocraft(folder, musicgen_folder)
    want, got = hub.model.text_encoder.state_dict(), ours.model.text_encoder.state_dict()
    assert all(torch.equal(got[n], want[n]) for n in want)


def test_from_pretrained_detects_audiocraft_files(family, monkeypatch) -> None:
    """`MusicGen.from_pretrained(folder)` takes the audiocraft path by itself; T5 comes from
    the default text encoder (pointed at a local folder here: there is no hub in tests)."""
    _, _, hub, folder, t5 = family
    monkeypatch.setattr("tunesmith.checkpoints.hub.DEFAULT_TEXT_ENCODER", str(t5))
    model = MusicGen.from_pretrained(folder, device="cpu")
    assert model.config == hub.config
    codes = torch.randint(0, 2048, (1, model.num_codebooks, 4))
    assert torch.equal(model.decode(codes), hub.decode(codes))


def test_codec_pointer_to_a_hub_encodec(tmp_path: Path) -> None:
    """`compression_state_dict.bin` may hold only {"pretrained": "facebook/encodec_32khz"}:
    the codec then comes from that repo (here a local folder) in the Hugging Face layout."""
    original = build_family_model("small", seed=5)
    codec_folder = tmp_path / "encodec_32khz"
    original.audio_encoder.save_pretrained(codec_folder)
    folder = save_audiocraft_checkpoint(original, tmp_path / "ac", codec_pointer=str(codec_folder))
    t5 = save_text_encoder(original, tmp_path / "t5")
    hub = MusicGen.from_pretrained(
        save_checkpoint(round_lm_through_fp16(original), tmp_path / "hub"), device="cpu"
    )
    ours = load_audiocraft(folder, t5)
    codes = torch.randint(0, 2048, (1, 4, 6))
    assert torch.equal(ours.decode(codes), hub.decode(codes))


def test_heads_without_xp_cfg_come_from_64_wide_heads(tmp_path: Path) -> None:
    """Heads leave no trace in weight shapes: without xp.cfg they are width / 64, as in every
    official checkpoint."""
    original = build_hf_model(
        "tiny", 6, hidden_size=128, num_attention_heads=2, ffn_dim=512, num_hidden_layers=1
    )
    folder = save_audiocraft_checkpoint(original, tmp_path / "ac", with_cfg=False)
    ours = load_audiocraft(folder, save_text_encoder(original, tmp_path / "t5"))
    assert ours.config.decoder.num_heads == 2
    hub = MusicGen.from_pretrained(
        save_checkpoint(round_lm_through_fp16(original), tmp_path / "hub"), device="cpu"
    )
    got = ours.generate_tokens(PROMPTS, duration=0.2, top_k=1)
    assert torch.equal(got, hub.generate_tokens(PROMPTS, duration=0.2, top_k=1))


class _Boom:
    """Unpickling this would run code; a weights-only load must refuse it."""

    def __reduce__(self):
        return (print, ("this must never print",))


def test_files_with_code_are_refused(tmp_path: Path, family) -> None:
    _, _, _, folder, t5 = family
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "compression_state_dict.bin").write_bytes(
        (folder / "compression_state_dict.bin").read_bytes()
    )
    torch.save({"best_state": {}, "xp.cfg": _Boom()}, bad / "state_dict.bin")
    with pytest.raises(CheckpointError, match="does not unpickle"):
        load_checkpoint(bad, CPU, torch.float32, text_encoder=t5)


def test_missing_codec_file_is_named(tmp_path: Path, family) -> None:
    _, _, _, folder, t5 = family
    only_lm = tmp_path / "lm"
    only_lm.mkdir()
    (only_lm / "state_dict.bin").write_bytes((folder / "state_dict.bin").read_bytes())
    with pytest.raises(CheckpointError, match=r"compression_state_dict\.bin"):
        load_checkpoint(only_lm, CPU, torch.float32, text_encoder=t5)


def test_melody_lm_is_refused_with_a_reason(tmp_path: Path, family) -> None:
    _, _, _, folder, t5 = family
    melody = save_audiocraft_melody_copy(folder, tmp_path / "melody")
    with pytest.raises(CheckpointError, match="melody"):
        load_checkpoint(melody, CPU, torch.float32, text_encoder=t5)


def test_unknown_text_encoder_folder(family) -> None:
    _, _, _, folder, _ = family
    with pytest.raises(ModelNotFoundError, match="text encoder"):
        load_checkpoint(folder, CPU, torch.float32, text_encoder="/no/such/t5")


def test_from_pretrained_text_encoder_keyword(family) -> None:
    _, _, hub, folder, t5 = family
    model = MusicGen.from_pretrained(folder, device="cpu", text_encoder=t5)
    assert model.config == hub.config
    got = model.generate_tokens(PROMPTS, duration=0.1, top_k=1)
    assert torch.equal(got, hub.generate_tokens(PROMPTS, duration=0.1, top_k=1))


@pytest.mark.parametrize("name", [n for n in DECODER_PRESETS if not n.startswith("melody")])
def test_real_sizes_are_recognised_from_audiocraft_shapes(name: str) -> None:
    """At the official sizes (built on `meta`: no memory), the sizes read from audiocraft's
    weight shapes alone, heads included, are the official preset; the codec is EnCodec 32 kHz;
    and the hub config.json of the same model reads the same."""
    from transformers import MusicgenForConditionalGeneration

    preset = DECODER_PRESETS[name]
    decoder = dict(
        hidden_size=preset.hidden_size,
        num_hidden_layers=preset.num_layers,
        num_attention_heads=preset.num_heads,
        ffn_dim=preset.ffn_dim,
        num_codebooks=preset.num_codebooks,
        audio_channels=preset.audio_channels,
    )
    with torch.device("meta"):
        model = MusicgenForConditionalGeneration(hf_config("small", **decoder))
    codec = audiocraft_keys.codec_config(audiocraft_codec_state(model))
    assert codec == EncodecConfig()
    lm = audiocraft_keys.lm_config(audiocraft_lm_state(model), {}, codec.num_quantizers)
    assert lm == preset
    assert LMConfig.from_hf(model.config.decoder.to_dict()) == preset


def test_hub_repo_of_audiocraft_files_only(family, tmp_path: Path, monkeypatch) -> None:
    """A hub repo with no config.json (audiocraft files only) is fetched a second time for
    `state_dict.bin` + `compression_state_dict.bin`."""
    _, _, hub, folder, t5 = family
    empty = tmp_path / "empty"
    empty.mkdir()
    asked: list[list[str]] = []

    def fake_download(repo_id: str, allow_patterns: list[str], **kwargs) -> str:
        asked.append(allow_patterns)
        return str(folder if "state_dict.bin" in allow_patterns else empty)

    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_download)
    model, _ = load_checkpoint("someone/musicgen-finetune", CPU, torch.float32, text_encoder=t5)
    assert model.cfg == hub.config
    assert asked[-1] == ["state_dict.bin", "compression_state_dict.bin"]


# --- faults found against audiocraft's own loader --------------------------------------------


def test_a_projection_in_the_file_loads_whatever_the_widths(tmp_path: Path) -> None:
    """audiocraft's text conditioner always has `output_proj`, also where the LM is as wide as
    T5 (transformers' rule, widths differ, would refuse the file): the file decides, and the
    text states are that projection of T5's."""
    original = build_hf_model("tiny", 7, hidden_size=32, num_attention_heads=2)
    assert getattr(original, "enc_to_dec_proj", None) is None  # none at equal widths
    folder = save_audiocraft_checkpoint(original, tmp_path / "ac")
    package = torch.load(folder / "state_dict.bin", weights_only=True)
    torch.manual_seed(0)
    weight, bias = torch.randn(32, 32).half(), torch.randn(32).half()
    package["best_state"][f"{audiocraft_keys.TEXT_PROJECTION}.weight"] = weight
    package["best_state"][f"{audiocraft_keys.TEXT_PROJECTION}.bias"] = bias
    torch.save(package, folder / "state_dict.bin")
    ours = load_audiocraft(folder, save_text_encoder(original, tmp_path / "t5"))
    assert ours.config.has_projection and ours.model.enc_to_dec_proj is not None
    ids, mask = ours.tokenizer(PROMPTS)
    with torch.inference_mode():
        t5 = ours.model.text_encoder(ids, mask)
        want = torch.nn.functional.linear(t5, weight.float(), bias.float()) * mask[..., None]
        got = ours.model.encode_text(ids, mask)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # and without one in the file, none is made
    plain = save_audiocraft_checkpoint(original, tmp_path / "plain")
    assert load_audiocraft(plain, tmp_path / "t5").model.enc_to_dec_proj is None


def test_the_codec_settings_in_xp_cfg_are_honoured(tmp_path: Path) -> None:
    """`seanet.pad_mode: constant` in the compression file's xp.cfg: the codec pads with zeros
    as that file was trained, giving transformers' EnCodec with pad_mode="constant" (not the
    reflect default)."""
    from transformers import EncodecModel

    original = build_family_model("small", seed=8)
    folder = save_audiocraft_checkpoint(
        original, tmp_path / "ac", codec_cfg={"seanet": {"pad_mode": "constant", "lstm": 2}}
    )
    ours = load_audiocraft(folder, save_text_encoder(original, tmp_path / "t5"))
    assert ours.config.audio_encoder.pad_mode == "constant"
    config = original.audio_encoder.config
    config.pad_mode = "constant"
    reference = EncodecModel(config).eval()
    reference.load_state_dict(original.audio_encoder.state_dict())
    torch.manual_seed(1)
    wav = 0.3 * torch.randn(1, 1, 32000 // 4)
    codes = torch.randint(0, 2048, (1, 4, 12))
    with torch.no_grad():
        want_audio = reference.decode(codes[None], [None]).audio_values
        want_codes = reference.encode(wav, bandwidth=config.target_bandwidths[-1]).audio_codes[0]
    assert (ours.decode(codes) - want_audio).abs().max() < 1e-4
    assert torch.equal(ours.encode(wav), want_codes)
    reflect = load_audiocraft(save_audiocraft_checkpoint(original, tmp_path / "r"), tmp_path / "t5")
    assert (reflect.decode(codes) - want_audio).abs().max() > 1e-3  # the setting matters


@pytest.mark.parametrize(
    ("seanet", "named"),
    [
        ({"pad_mode": "circular"}, "seanet.pad_mode"),
        ({"activation": "LeakyReLU"}, "seanet.activation"),
        ({"norm": "time_group_norm"}, "seanet.norm"),
        ({"decoder": {"trim_right_ratio": 0.5}}, "seanet.decoder.trim_right_ratio"),
        ({"decoder": {"n_filters": 32}}, "seanet.decoder.n_filters"),
        ({"n_filters": 8}, "seanet.n_filters"),
        ({"true_skip": False}, "seanet.true_skip"),
    ],
)
def test_codec_settings_it_cannot_run_are_refused_by_name(
    tmp_path: Path, seanet: dict, named: str
) -> None:
    original = build_family_model("small", seed=8)
    folder = save_audiocraft_checkpoint(original, tmp_path / "ac", codec_cfg={"seanet": seanet})
    with pytest.raises(CheckpointError, match=named.replace(".", r"\.")):
        load_audiocraft(folder, save_text_encoder(original, tmp_path / "t5"))
