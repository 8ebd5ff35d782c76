"""The model catalog: sizes computed from the presets agree with the modules themselves, the
cache status is read offline, `tunesmith models` prints every checkpoint with its licence,
and a download names the licence as it starts."""

from __future__ import annotations

import argparse
import json
import types
from pathlib import Path

import pytest
import torch

from tunesmith.checkpoints import catalog
from tunesmith.checkpoints.catalog import (
    CHECKPOINTS,
    encodec_parameters,
    lm_parameters,
    t5_parameters,
)
from tunesmith.cli.models import register
from tunesmith.config import DECODER_PRESETS, EncodecConfig, LMConfig, T5Config, preset_heads
from tunesmith.errors import ModelNotFoundError


def numel(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", [n for n in DECODER_PRESETS if not n.startswith("melody")])
def test_lm_formula_matches_the_module(name: str) -> None:
    from tunesmith.models.lm import MusicGenLM

    with torch.device("meta"):
        lm = MusicGenLM(DECODER_PRESETS[name])
    assert lm_parameters(DECODER_PRESETS[name]) == numel(lm)


def test_t5_and_encodec_formulas_match_the_modules() -> None:
    from tunesmith.models.encodec import EncodecModel
    from tunesmith.models.t5 import T5Encoder

    with torch.device("meta"):
        assert t5_parameters(T5Config()) == numel(T5Encoder(T5Config()))
        assert encodec_parameters(EncodecConfig()) == numel(EncodecModel(EncodecConfig()))


def test_melody_formula_matches_transformers_melody_decoder() -> None:
    from transformers import MusicgenMelodyDecoderConfig, MusicgenMelodyForCausalLM

    hf = MusicgenMelodyDecoderConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, ffn_dim=64, vocab_size=64
    )
    with torch.device("meta"):
        decoder = MusicgenMelodyForCausalLM(hf)
    ours = LMConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=2, ffn_dim=64)
    assert lm_parameters(ours, cross_attention=False) == numel(decoder)


def test_musicgen_small_numbers() -> None:
    small = catalog.find("facebook/musicgen-small")
    assert small is not None and small.supported
    assert 585e6 < small.params < 592e6  # T5 109.6 M + 0.8 M + LM 419.6 M + EnCodec 57.9 M
    assert abs(small.download_bytes - 2.36e9) < 0.02e9  # the hub's model.safetensors
    assert catalog.find("musicgen-stereo-large").decoder.audio_channels == 2  # type: ignore[union-attr]
    assert catalog.find("melody").melody  # type: ignore[union-attr]


def test_heads_preset_lookup() -> None:
    assert preset_heads(48, 1536, 6144) == 24
    assert preset_heads(48, 2048, 8192) == 32
    assert preset_heads(3, 256, 1024) == 4  # unknown sizes: 64-wide heads


def _fake_cache(root: Path, repo_id: str, files: list[str]) -> None:
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    for f in files:
        (snap / f).write_text("{}")


@pytest.fixture
def offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    _fake_cache(cache, "facebook/musicgen-small", ["config.json", "model.safetensors"])
    _fake_cache(cache, "facebook/musicgen-medium", ["config.json"])
    return cache


def test_cache_status_reads_the_local_cache(offline_cache: Path) -> None:
    assert catalog.cache_status("facebook/musicgen-small") == "yes"
    assert catalog.cache_status("facebook/musicgen-medium") == "partial"
    assert catalog.cache_status("facebook/musicgen-large") == "no"


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tunesmith")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.run(args))


def test_models_command_lists_every_checkpoint(offline_cache: Path, capsys) -> None:
    assert run_cli(["models"]) == 0
    out = capsys.readouterr().out
    for c in CHECKPOINTS:
        assert c.repo_id in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("facebook/")}
    assert " yes " in lines["facebook/musicgen-small"]
    assert " partial " in lines["facebook/musicgen-medium"]
    assert "CC-BY-NC 4.0" in lines["facebook/musicgen-large"]
    assert "non-commercial" in out


def test_models_command_json(offline_cache: Path, capsys) -> None:
    assert run_cli(["models", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in table] == [c.repo_id for c in CHECKPOINTS]
    assert all(r["licence"] == "CC-BY-NC 4.0" for r in table)
    assert table[0]["cached"] == "yes"


def test_download_names_the_licence(tmp_path: Path, monkeypatch, capsys) -> None:
    from tunesmith.checkpoints import hub

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr(
        "huggingface_hub.snapshot_download", lambda repo_id, **kw: str(tmp_path / "snap")
    )
    reachable = types.SimpleNamespace(sha="0" * 40)
    monkeypatch.setattr("huggingface_hub.HfApi.repo_info", lambda self, repo_id: reachable)
    hub._download("facebook/musicgen-medium")
    err = capsys.readouterr().err
    assert "facebook/musicgen-medium" in err and "CC-BY-NC 4.0" in err

    _fake_cache(tmp_path / "empty", "facebook/musicgen-small", ["config.json", "model.safetensors"])
    hub._download("facebook/musicgen-small")  # cached: nothing to download, nothing said
    assert capsys.readouterr().err == ""


def test_offline_says_nothing_of_a_download_and_names_the_id(tmp_path: Path, monkeypatch, capsys):
    """No network and no cached copy: no "downloading ..." line (nothing downloads), and the
    hint names the id that was given, saying when `tunesmith models` does not know it."""
    from tunesmith.checkpoints import hub

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)

    def unreachable(self, repo_id):
        raise ConnectionError("no network")

    monkeypatch.setattr("huggingface_hub.HfApi.repo_info", unreachable)
    for repo, known in (("facebook/musicgen-small", True), ("facebook/musicgen-xl", False)):
        with pytest.raises(ModelNotFoundError) as caught:
            hub.resolve_checkpoint(repo)
        message = str(caught.value)
        name = repo.rpartition("/")[2]
        assert f"--model /path/to/{name}" in message
        assert ("not one of the checkpoints `tunesmith models` lists" in message) is not known
        assert "downloading" not in capsys.readouterr().err
