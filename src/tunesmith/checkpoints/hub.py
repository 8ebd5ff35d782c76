"""From a model name to a folder on disk: local folders, hub ids, the Hugging Face cache.

Downloads fetch only the files the engine reads, and say the weights' licence as they start.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from ..errors import CheckpointError, ModelNotFoundError
from ..options import DEFAULT_MODEL
from .catalog import BY_REPO, T5_REPO, licence_notice

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
# A text encoder's folder or hub repo: only its config, weights and tokenizer.
TEXT_ENCODER_FILES = [
    "config.json",
    "model.safetensors",
    "model*.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
]
# A hub repo with audiocraft's files and no hub-layout weights.
AUDIOCRAFT_FILES = ["state_dict.bin", "compression_state_dict.bin"]
DEFAULT_TEXT_ENCODER = T5_REPO  # what audiocraft's MusicGen conditions on
_ALIASES = {"t5-base": T5_REPO}
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
    local = _local_folder(
        name,
        f"model folder {name!r} does not exist (give a folder holding config.json, "
        f"model.safetensors and tokenizer.json, or a hub id such as {DEFAULT_MODEL})",
    )
    if local is not None:
        return local
    folder = _download(name)
    if not (folder / "config.json").is_file():
        # A repo of audiocraft's files only (fine-tunes are often shared that way).
        folder = _download(name, AUDIOCRAFT_FILES, announce=False)
    return folder


def _model_hint(repo_id: str) -> str:
    """How to point at a local copy of `repo_id`, and whether `tunesmith models` knows it."""
    folder = f"/path/to/{repo_id.rpartition('/')[2]}"
    hint = f"--model {folder} (Python: MusicGen.from_pretrained({folder!r}))"
    if repo_id not in BY_REPO:
        hint += f"; {repo_id} is not one of the checkpoints `tunesmith models` lists"
    return hint


_TEXT_HINT = "--text-encoder /path/to/t5-base (Python: text_encoder='/path/to/t5-base')"


def _download(
    repo_id: str, patterns: list[str] | None = None, hint: str | None = None, announce: bool = True
) -> Path:
    from huggingface_hub import HfApi, constants, snapshot_download

    patterns = patterns or HUB_FILES
    hint = hint or _model_hint(repo_id)
    try:
        if constants.HF_HUB_OFFLINE:
            raise ConnectionError("HF_HUB_OFFLINE is set")
        revision = HfApi().repo_info(repo_id).sha  # reachable? (nothing is announced if not)
        if announce and not _is_cached(repo_id, patterns):
            # Before the wait: what is being fetched, how big, and under which licence.
            print(licence_notice(repo_id), file=sys.stderr, flush=True)
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
    except Exception as online_error:  # offline, hub down, gated, unknown repo...
        try:
            return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
        except Exception:
            reason = (
                str(online_error).splitlines()[0]
                if str(online_error)
                else type(online_error).__name__
            )
            raise ModelNotFoundError(
                f"cannot get {repo_id!r} from the Hugging Face Hub and no copy is cached in "
                f"{constants.HF_HUB_CACHE} ({reason}). Connect once to download it, or pass a "
                f"local folder with its files: {hint}"
            ) from None


def _is_cached(repo_id: str, patterns: list[str]) -> bool:
    """Whether the config and weights of `repo_id` are already in the local cache (no network)."""
    from huggingface_hub import try_to_load_from_cache

    if patterns == AUDIOCRAFT_FILES:
        needed = AUDIOCRAFT_FILES
    else:
        needed = ["config.json", "model.safetensors"]
    cached = all(isinstance(try_to_load_from_cache(repo_id, f), str) for f in needed)
    return cached or _has_cached_index(repo_id)


def _has_cached_index(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    index = try_to_load_from_cache(repo_id, "model.safetensors.index.json")
    if not isinstance(index, str):
        return False
    shards = set(json.loads(Path(index).read_text())["weight_map"].values())
    return all(isinstance(try_to_load_from_cache(repo_id, s), str) for s in shards)


def _local_folder(name: str, missing: str) -> Path | None:
    """`name` as an existing folder; None if it reads as a hub id; else ModelNotFoundError."""
    folder = Path(name).expanduser()
    if folder.is_dir():
        return folder
    if looks_like_path(name) or not _HUB_ID.match(name):
        raise ModelNotFoundError(missing)
    return None


def resolve_text_encoder(name_or_path: str | os.PathLike[str] | None = None) -> Path:
    """The folder of the T5 text encoder for audiocraft checkpoints: a local folder (a T5
    checkpoint, or a MusicGen one in the hub layout), or a hub id (default t5-base),
    downloaded with only its config, weights and tokenizer."""
    name = os.fspath(name_or_path) if name_or_path is not None else DEFAULT_TEXT_ENCODER
    name = _ALIASES.get(name, name)
    local = _local_folder(
        name,
        f"text encoder folder {name!r} does not exist (give a folder with a T5 checkpoint: "
        f"config.json, model.safetensors, tokenizer.json; or a hub id such as {T5_REPO})",
    )
    if local is not None:
        return local
    return _download(name, TEXT_ENCODER_FILES, hint=_TEXT_HINT)


def weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [folder / s for s in shards]
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    raise CheckpointError(f"{folder} has no model.safetensors (or sharded index)")


# safetensors dtype names -> torch dtypes (the format's spec; what checkpoints use)
_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}  # fmt: skip


def iter_tensors(
    files: list[Path], wanted: Callable[[str], bool] = lambda name: True
) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) pairs read one at a time from safetensors files, each into memory of its
    own.

    Not memory-mapped on purpose: a tensor that views a mapping keeps the pages it touched
    resident, so a model converted while loading (int8, packed, float16) would hold the
    file's float32 pages beside its own weights. Reading tensor by tensor (the format is an
    8-byte header length, a JSON header of dtype/shape/offsets, then the raw little-endian
    data) keeps one copy of the weights plus one tensor in flight. Names `wanted` rejects are
    not read at all.
    """
    for file in files:
        with open(file, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            try:
                header = json.loads(f.read(size))
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise CheckpointError(f"{file} is not a safetensors file") from None
            header.pop("__metadata__", None)
            entries = sorted(header.items(), key=lambda item: item[1]["data_offsets"][0])
            for name, info in entries:
                if wanted(name):
                    yield name, _read_tensor(f, file, 8 + size, name, info)


def _read_tensor(
    f: io.BufferedReader, file: Path, base: int, name: str, info: dict
) -> torch.Tensor:
    dtype = _DTYPES.get(info["dtype"])
    if dtype is None:
        raise CheckpointError(f"{file}: tensor {name} has unsupported dtype {info['dtype']}")
    tensor = torch.empty(info["shape"], dtype=dtype)
    begin, end = info["data_offsets"]
    nbytes = tensor.numel() * tensor.element_size()
    if end - begin != nbytes:
        raise CheckpointError(f"{file}: tensor {name} has {end - begin} bytes, expected {nbytes}")
    f.seek(base + begin)
    if nbytes and f.readinto(tensor.reshape(-1).view(torch.uint8).numpy()) != nbytes:  # type: ignore[arg-type]
        raise CheckpointError(f"{file} is truncated (in tensor {name})")
    return tensor
