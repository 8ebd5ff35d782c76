"""Reading audiocraft's checkpoint files and a separate T5 text encoder (I/O; the name maps
and size inference are in `audiocraft_keys`)."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..config import EncodecConfig, MusicGenConfig, T5Config
from ..errors import CheckpointError
from . import audiocraft_keys
from .hub import iter_tensors, resolve_checkpoint, weight_files
from .hub_keys import hub_pairs


def is_audiocraft_folder(folder: Path) -> bool:
    """audiocraft's files and no hub-layout weights (a hub repo holds both: the hub ones win,
    as they carry T5 and full-precision weights)."""
    has_hub = (folder / "config.json").is_file() and (
        (folder / "model.safetensors").is_file()
        or (folder / "model.safetensors.index.json").is_file()
    )
    return (folder / audiocraft_keys.LM_FILE).is_file() and not has_hub


# --- audiocraft files -----------------------------------------------------------------------


def _torch_file(path: Path) -> dict[str, Any]:
    """A `torch.save` pickle read with `weights_only=True` (tensors, dicts, strings: no code
    runs), memory-mapped when it is in the zip format."""
    if not path.is_file():
        raise CheckpointError(f"{path.parent} has no {path.name} (audiocraft layout)")
    try:
        try:
            pkg = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:  # the pre-zip format cannot be memory-mapped
            if "mmap" not in str(err):
                raise
            pkg = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path} holds Python objects besides tensors, which tunesmith does not unpickle "
            f"(it could run code): {str(err).splitlines()[0]}"
        ) from None
    except (RuntimeError, OSError, EOFError) as err:
        raise CheckpointError(f"cannot read {path}: {str(err).splitlines()[0]}") from None
    if not isinstance(pkg, dict):
        raise CheckpointError(f"{path} holds a {type(pkg).__name__}, not a state dict")
    return pkg


def _best_state(pkg: dict[str, Any], path: Path) -> dict[str, torch.Tensor]:
    state = pkg.get("best_state", pkg)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path} has no weights under 'best_state'")
    return tensors


def _xp_cfg(pkg: dict[str, Any]) -> dict[str, Any]:
    """audiocraft's training config (YAML text since its first release), or {} if absent."""
    raw = pkg.get("xp.cfg")
    if isinstance(raw, dict):
        return raw
    if not isinstance(raw, str):
        return {}
    import yaml

    try:
        cfg = yaml.safe_load(raw)
    except yaml.YAMLError:
        return {}
    return cfg if isinstance(cfg, dict) else {}


def _codec_source(folder: Path) -> tuple[EncodecConfig, Iterator[tuple[str, torch.Tensor]]]:
    """EnCodec config and (our name, tensor) pairs from compression_state_dict.bin, which
    holds either weights or a pointer to a codec in the hub layout (read lazily)."""
    path = folder / audiocraft_keys.CODEC_FILE
    pkg = _torch_file(path)
    pointer = pkg.get("pretrained")
    if isinstance(pointer, str):
        codec_folder = resolve_checkpoint(pointer)
        try:
            cfg = EncodecConfig.from_hf(json.loads((codec_folder / "config.json").read_text()))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"codec {pointer!r} is not a usable EnCodec: {err}") from None
        pairs = iter_tensors(weight_files(codec_folder))
        return cfg, hub_pairs((f"audio_encoder.{k}", t) for k, t in pairs)
    state = _best_state(pkg, path)
    try:
        cfg = audiocraft_keys.codec_config(state, _xp_cfg(pkg))
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None
    return cfg, iter(audiocraft_keys.codec_tensors(state).items())


def audiocraft_config(folder: Path, text_folder: Path) -> MusicGenConfig:
    codec, _ = _codec_source(folder)
    path = folder / audiocraft_keys.LM_FILE
    pkg = _torch_file(path)
    cfg = _xp_cfg(pkg)
    state = _best_state(pkg, path)
    try:
        lm = audiocraft_keys.lm_config(state, cfg, codec.num_quantizers)
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None
    return MusicGenConfig(
        text_encoder=text_encoder_config(text_folder),
        decoder=lm,
        audio_encoder=codec,
        max_duration=audiocraft_keys.max_duration(cfg),
        text_projection=audiocraft_keys.has_text_projection(state),  # the file's, not a rule
    )


def audiocraft_tensors(folder: Path, text_folder: Path) -> Iterator[tuple[str, torch.Tensor]]:
    path = folder / audiocraft_keys.LM_FILE
    yield from audiocraft_keys.lm_tensors(_best_state(_torch_file(path), path)).items()
    yield from _codec_source(folder)[1]
    yield from hub_pairs(_text_encoder_pairs(text_folder))


# --- the T5 text encoder on its own ---------------------------------------------------------


def _text_encoder_json(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(f"text encoder folder {folder} has no config.json")
    cfg: dict[str, Any] = json.loads(path.read_text())
    return cfg


def text_encoder_config(folder: Path) -> T5Config:
    """T5 sizes from a T5 checkpoint's config.json, or a MusicGen one's `text_encoder` part."""
    cfg = _text_encoder_json(folder)
    cfg = cfg.get("text_encoder", cfg)
    if cfg.get("model_type") != "t5":
        raise CheckpointError(
            f"{folder} is not a T5 checkpoint (model_type {cfg.get('model_type')!r})"
        )
    try:
        return T5Config.from_hf(cfg)
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"{folder}: unsupported T5 config: {err}") from None


def _text_encoder_pairs(folder: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """The T5 encoder's tensors under MusicGen's hub names (`text_encoder.*`), read alone:
    a full T5 checkpoint's decoder is never loaded."""
    if "text_encoder" in _text_encoder_json(folder):  # a composite checkpoint (MusicGen's own)
        yield from iter_tensors(weight_files(folder), lambda key: key.startswith("text_encoder."))
        return
    for key, tensor in iter_tensors(
        weight_files(folder), lambda key: key.startswith(("shared.", "encoder."))
    ):
        yield f"text_encoder.{key}", tensor
