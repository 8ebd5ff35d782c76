"""Loading checkpoints in the hub layout: both weight-norm namings, strict checks, errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tunesmith import MusicGen
from tunesmith.checkpoints.loading import HUB_FILES
from tunesmith.errors import CheckpointError, ModelNotFoundError


def test_legacy_names_load_to_the_same_weights(tiny_model, tiny_legacy_checkpoint: Path) -> None:
    legacy = MusicGen.from_pretrained(tiny_legacy_checkpoint, device="cpu")
    ours = tiny_model.model.state_dict()
    theirs = legacy.model.state_dict()
    assert ours.keys() == theirs.keys()
    for name in ours:
        torch.testing.assert_close(theirs[name], ours[name], rtol=0, atol=1e-6, msg=name)
    codes = torch.randint(0, 2048, (1, 4, 5))
    torch.testing.assert_close(legacy.decode(codes), tiny_model.decode(codes), rtol=0, atol=1e-5)


def _copy_with(src: Path, dst: Path, edit) -> Path:
    shutil.copytree(src, dst)
    state = load_file(str(dst / "model.safetensors"))
    edit(state)
    save_file(state, str(dst / "model.safetensors"))
    return dst


def test_missing_tensor_is_named(tiny_checkpoint: Path, tmp_path: Path) -> None:
    name = "decoder.model.decoder.layers.1.fc1.weight"
    folder = _copy_with(tiny_checkpoint, tmp_path / "m", lambda s: s.pop(name))
    with pytest.raises(CheckpointError, match=r"missing 1 \(decoder\.layers\.1\.fc1\.weight\)"):
        MusicGen.from_pretrained(folder, device="cpu")


def test_unexpected_tensor_is_named(tiny_checkpoint: Path, tmp_path: Path) -> None:
    folder = _copy_with(
        tiny_checkpoint, tmp_path / "u", lambda s: s.update({"decoder.extra.weight": torch.ones(2)})
    )
    with pytest.raises(CheckpointError, match=r"unexpected 1 \(decoder\.extra\.weight\)"):
        MusicGen.from_pretrained(folder, device="cpu")


def test_wrong_shape_is_named(tiny_checkpoint: Path, tmp_path: Path) -> None:
    key = "decoder.lm_heads.0.weight"
    folder = _copy_with(
        tiny_checkpoint, tmp_path / "s", lambda s: s.update({key: torch.ones(3, 3)})
    )
    with pytest.raises(CheckpointError, match=r"decoder\.lm_heads\.0\.weight has shape \(3, 3\)"):
        MusicGen.from_pretrained(folder, device="cpu")


def test_folder_without_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"config\.json"):
        MusicGen.from_pretrained(tmp_path, device="cpu")


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        MusicGen.from_pretrained(tmp_path / "nope", device="cpu")


def test_offline_hub_id_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelNotFoundError) as err:
        MusicGen.from_pretrained("facebook/musicgen-small", device="cpu")
    message = str(err.value)
    assert "facebook/musicgen-small" in message
    assert str(tmp_path / "hub") in message
    assert "--model /path/to" in message


def test_hub_download_asks_only_for_needed_files() -> None:
    from fnmatch import fnmatch

    wanted = ["config.json", "model.safetensors", "tokenizer.json", "spiece.model"]
    unwanted = ["pytorch_model.bin", "state_dict.bin", "compression_state_dict.bin"]
    assert all(any(fnmatch(f, p) for p in HUB_FILES) for f in wanted)
    assert not any(fnmatch(f, p) for f in unwanted for p in HUB_FILES)


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/self/maps (Linux)")
def test_int8_model_lets_go_of_the_checkpoint_file(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """An int8 model keeps no view of the memory-mapped float32 file: otherwise every page of
    it stays resident beside the int8 weights, and int8 saves no memory."""
    import gc

    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, folder)
    model = MusicGen.from_pretrained(folder, device="cpu", quantize="int8")
    gc.collect()
    assert str(folder / "model.safetensors") not in Path("/proc/self/maps").read_text()
    assert model.generate_tokens("x", duration=0.04, top_k=1).shape[-1] == 2


def test_safetensors_reader_matches_the_library(tmp_path: Path) -> None:
    """Our tensor-by-tensor reader gives what safetensors itself reads, for every dtype and
    shape a checkpoint holds (scalars and empty tensors too); truncated files are named."""
    from tunesmith.checkpoints.hub import iter_tensors

    tensors = {
        "f32": torch.randn(3, 5),
        "f16": torch.randn(7).half(),
        "bf16": torch.randn(2, 2, 2).bfloat16(),
        "i64": torch.arange(4),
        "i8": torch.tensor([-3, 4], dtype=torch.int8),
        "flag": torch.tensor([True, False]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
    }
    path = tmp_path / "t.safetensors"
    save_file(tensors, str(path))
    got = dict(iter_tensors([path]))
    want = load_file(str(path))
    assert got.keys() == want.keys()
    for name, tensor in want.items():
        assert got[name].dtype == tensor.dtype and torch.equal(got[name], tensor), name
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(CheckpointError, match="truncated"):
        dict(iter_tensors([path]))
