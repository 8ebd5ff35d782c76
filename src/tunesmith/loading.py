"""From a name or folder to a loaded model: hub download, config, weights, strict checks.

Weights are read tensor by tensor from memory-mapped safetensors into a model built on the
`meta` device (`load_state_dict(assign=True)`), so loading never holds two copies of them.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import torch

from .checkpoint_keys import hf_to_tunesmith
from .config import MusicGenConfig
from .errors import CheckpointError, ModelNotFoundError
from .models.musicgen import MusicGenModel
from .tokenizer import TextTokenizer

DEFAULT_MODEL = "facebook/musicgen-small"
# Only what the engine reads: not pytorch_model.bin, not audiocraft's files.
HUB_FILES = [
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model*.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "spiece.model",
]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_like_path(name: str) -> bool:
    """A name the user meant as a folder rather than a hub id."""
    return (
        name.startswith((".", "/", "~"))
        or os.sep in name.replace("/", "", 1)
        or Path(name).exists()
    )


def resolve_checkpoint(name_or_path: str | os.PathLike[str]) -> Path:
    """A local folder, or a hub id downloaded (only the needed files) into the standard cache."""
    name = os.fspath(name_or_path)
    folder = Path(name).expanduser()
    if folder.is_dir():
        return folder
    if looks_like_path(name) or not _HUB_ID.match(name):
        raise ModelNotFoundError(
            f"model folder {name!r} does not exist (give a folder holding config.json, "
            f"model.safetensors and tokenizer.json, or a hub id such as {DEFAULT_MODEL})"
        )
    return _download(name)


def _download(repo_id: str) -> Path:
    from huggingface_hub import constants, snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES))
    except Exception as online_error:  # offline, hub down, gated, unknown repo...
        try:
            return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES, local_files_only=True))
        except Exception:
            reason = (
                str(online_error).splitlines()[0]
                if str(online_error)
                else type(online_error).__name__
            )
            raise ModelNotFoundError(
                f"cannot get {repo_id!r} from the Hugging Face Hub and no copy is cached in "
                f"{constants.HF_HUB_CACHE} ({reason}). Connect once to download it, or pass a "
                f"local folder with its files: --model /path/to/musicgen-small "
                f"(Python: MusicGen.from_pretrained('/path/to/musicgen-small'))"
            ) from None


def read_config(folder: Path) -> MusicGenConfig:
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{folder} has no config.json: not a MusicGen checkpoint folder")
    try:
        return MusicGenConfig.from_hf(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path} is not a MusicGen config: {err}") from None


def load_tokenizer(folder: Path) -> TextTokenizer:
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise CheckpointError(
            f"{folder} has no tokenizer.json (the T5 tokenizer of the checkpoint)"
        )
    return TextTokenizer.from_file(path)


def _weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [folder / s for s in shards]
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    raise CheckpointError(f"{folder} has no model.safetensors (or sharded index)")


def iter_tensors(files: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) pairs read one at a time from memory-mapped safetensors files."""
    from safetensors import safe_open

    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                yield key, f.get_tensor(key)


def load_model(
    folder: Path,
    config: MusicGenConfig,
    device: torch.device,
    dtype: torch.dtype,
) -> MusicGenModel:
    """Build on `meta`, fill strictly from the checkpoint, place on device.

    `dtype` applies to the decoder; the T5 encoder and the codec stay float32 (T5 overflows in
    fp16, and both are a small share of the run time).
    """
    with torch.device("meta"):
        model = MusicGenModel(config)
    expected = model.state_dict()

    def placed(name: str, tensor: torch.Tensor) -> torch.Tensor:
        target = dtype if name.startswith(("decoder.", "enc_to_dec_proj.")) else torch.float32
        return tensor.to(
            device=device, dtype=target if tensor.is_floating_point() else tensor.dtype
        )

    raw = dict(iter_tensors(_weight_files(folder)))
    state = hf_to_tunesmith(raw)
    del raw
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint in {folder} does not match the MusicGen layout: "
            f"missing {_names(missing)}; unexpected {_names(unexpected)}"
        )
    for name, tensor in list(state.items()):
        if tensor.shape != expected[name].shape:
            raise CheckpointError(
                f"tensor {name} has shape {tuple(tensor.shape)}, the config implies "
                f"{tuple(expected[name].shape)}"
            )
        state[name] = placed(name, tensor)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def _names(keys: list[str], limit: int = 8) -> str:
    if not keys:
        return "none"
    shown = ", ".join(keys[:limit])
    return f"{len(keys)} ({shown}{', ...' if len(keys) > limit else ''})"
