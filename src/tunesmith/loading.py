"""From a name or folder to a loaded model: hub download, config, weights, strict checks.

Weights are read tensor by tensor from memory-mapped safetensors into a model built on the
`meta` device (`load_state_dict(assign=True)`), so loading never holds two copies of them.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from .checkpoint_keys import (
    TIED_T5_EMBEDDING,
    fold_weight_norm,
    is_weight_norm_part,
    rename_hf_key,
)
from .config import MusicGenConfig
from .errors import CheckpointError, ModelNotFoundError
from .models.musicgen import MusicGenModel
from .quantize import Int8Linear, quantize_linears, quantize_rows
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
    quantize: str | None = None,
) -> MusicGenModel:
    """Build on `meta`, fill strictly from the checkpoint one tensor at a time, place on device.

    `dtype` applies to the decoder; the T5 encoder and the codec stay float32 (T5 overflows in
    fp16, and both are a small share of the run time). `quantize="int8"` stores the decoder's
    linear layers as int8, each weight converted as it is read: the full-precision copy of the
    decoder never exists in memory.
    """
    with torch.device("meta"):
        model = MusicGenModel(config)
        if quantize is not None:
            # The decoder is most of the weights read per step; T5 is most of the rest of
            # the memory. The codec's convolutions stay float32.
            quantize_linears(model.decoder, quantize)
            quantize_linears(model.text_encoder, quantize)
    expected = model.state_dict()
    quantized = {
        f"{name}.weight" for name, module in model.named_modules() if isinstance(module, Int8Linear)
    }

    state: dict[str, torch.Tensor] = {}
    norm_parts: dict[str, torch.Tensor] = {}  # weight-norm g / v, folded once both are read
    tied: torch.Tensor | None = None
    unexpected: list[str] = []

    def place(name: str, tensor: torch.Tensor) -> None:
        if name not in expected:
            unexpected.append(name)
            return
        if name in quantized:
            _check_shape(name, tensor, expected[name])
            q, scales = quantize_rows(tensor)
            state[name] = q.to(device)
            state[name.removesuffix(".weight") + ".scales"] = scales.to(device, torch.bfloat16)
            return
        _check_shape(name, tensor, expected[name])
        target = dtype if name.startswith(("decoder.", "enc_to_dec_proj.")) else torch.float32
        state[name] = tensor.to(device, target if tensor.is_floating_point() else tensor.dtype)

    for key, tensor in iter_tensors(_weight_files(folder)):
        if key == TIED_T5_EMBEDDING:
            tied = tensor
        name = rename_hf_key(key)
        if name is None:
            continue
        if is_weight_norm_part(name):
            norm_parts[name] = tensor
        else:
            place(name, tensor)
    for name, tensor in fold_weight_norm(norm_parts).items():
        place(name, tensor)
    if "text_encoder.embed_tokens.weight" not in state and tied is not None:
        place("text_encoder.embed_tokens.weight", tied)

    missing = sorted(set(expected) - set(state))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint in {folder} does not match the MusicGen layout: "
            f"missing {_names(missing)}; unexpected {_names(sorted(unexpected))}"
        )
    model.load_state_dict(state, strict=True, assign=True)
    del state
    model.decoder.fuse()
    _release_freed_memory()
    return model.eval()


def _release_freed_memory() -> None:
    """Hand the loading transients back to the OS (glibc keeps freed heap otherwise, and the
    process would look as large as the float32 checkpoint it read)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def _check_shape(name: str, tensor: torch.Tensor, want: torch.Tensor) -> None:
    if tensor.shape != want.shape:
        raise CheckpointError(
            f"tensor {name} has shape {tuple(tensor.shape)}, the config implies {tuple(want.shape)}"
        )


def _names(keys: list[str], limit: int = 8) -> str:
    if not keys:
        return "none"
    shown = ", ".join(keys[:limit])
    return f"{len(keys)} ({shown}{', ...' if len(keys) > limit else ''})"
