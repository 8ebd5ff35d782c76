"""Adapters where users take them: the server's /healthz names them (never their paths),
`tunesmith batch --adapter` and `tunesmith models --adapter`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tunesmith import MusicGen
from tunesmith.checkpoints.adapters import AdapterSettings
from tunesmith.cli.main import main
from tunesmith.training.lora import DEFAULT_TARGETS, add_lora, export_adapter, lora_weights


@pytest.fixture(scope="module")
def adapter(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = MusicGen.from_pretrained(tiny_checkpoint, device="cpu", engine=False)
    add_lora(model.model.decoder, DEFAULT_TARGETS, rank=2, alpha=4, dropout=0.0)
    for _a, b in lora_weights(model.model.decoder).values():
        torch.nn.init.normal_(b, std=0.5)
    folder = tmp_path_factory.mktemp("adapters") / "my-style"
    return export_adapter(model.model.decoder, folder, AdapterSettings(2, 4, 0.0, "tiny"))


def test_healthz_names_the_adapters(adapter: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from tunesmith.server import create_app

    model = MusicGen.from_pretrained(
        tiny_checkpoint, device="cpu", adapter=adapter, adapter_scale=0.5
    )
    with TestClient(create_app(model, tmp_path / "data"), base_url="http://127.0.0.1") as client:
        health = client.get("/healthz").json()
    assert health["adapters"] == [{"name": "my-style", "scale": 0.5, "rank": 2, "layers": 20}]
    assert str(adapter.parent) not in json.dumps(health)


def test_batch_and_models_take_adapters(adapter: Path, tiny_checkpoint: Path, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("low hum\nhigh beep\n")
    out = tmp_path / "out"
    args = ["batch", str(prompts), "--out-dir", str(out), "--model", str(tiny_checkpoint)]
    assert main([*args, "--duration", "0.3", "--adapter", str(adapter)]) == 0
    assert "with 1 adapter(s)" in capsys.readouterr().err
    assert len(list(out.glob("*.wav"))) == 2
    assert main(["models", "--json", "--adapter", str(adapter)]) == 0
    listed = json.loads(capsys.readouterr().out)["adapters"]
    assert listed[0]["rank"] == 2 and listed[0]["base_model"] == "tiny"
    assert main([*args, "--adapter", str(tmp_path)]) == 1  # refused before any model loads
    assert "no adapter_config.json" in capsys.readouterr().err
