"""From a name or folder to a loaded model: hub download, config, weights, strict checks.

Weights are read tensor by tensor from the safetensors files into a model built on the
`meta` device (`load_state_dict(assign=True)`), so loading never holds two copies of them.

Two folder layouts load: the Hugging Face one (`config.json`, `model.safetensors`,
`tokenizer.json`) and audiocraft's (`state_dict.bin` + `compression_state_dict.bin`, see
`audiocraft_keys`), whose T5 weights and tokenizer come from a separate text-encoder folder
or hub id (`text_encoder=`, default t5-base).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from ..config import MusicGenConfig
from ..engine.int8 import (
    Int8Embedding,
    Int8Linear,
    quantize_embeddings,
    quantize_linears,
    quantize_rows,
)
from ..engine.memory import release_freed_memory
from ..errors import CheckpointError
from ..models.melody import MusicGenMelodyModel
from ..models.network import MusicGenModel
from .adapters import Adapter, merged
from .audiocraft_files import audiocraft_config, audiocraft_tensors, is_audiocraft_folder
from .hub import (  # noqa: F401 (re-exported: the names callers know from this module)
    DEFAULT_TEXT_ENCODER,
    HUB_FILES,
    TEXT_ENCODER_FILES,
    iter_tensors,
    looks_like_path,
    resolve_checkpoint,
    resolve_text_encoder,
    weight_files,
)
from .hub_keys import fold_weight_norm, hub_pairs, is_weight_norm_part
from .tokenizer import TextTokenizer


def read_config(folder: Path, text_encoder: str | os.PathLike[str] | None = None) -> MusicGenConfig:
    """The model's configuration: from config.json, or for audiocraft files from the weight
    shapes and xp.cfg plus the text encoder's config."""
    if is_audiocraft_folder(folder):
        return audiocraft_config(folder, resolve_text_encoder(text_encoder))
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{folder} has no config.json: not a MusicGen checkpoint folder")
    try:
        return MusicGenConfig.from_hf(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path} is not a MusicGen config: {err}") from None


def load_tokenizer(
    folder: Path, text_encoder: str | os.PathLike[str] | None = None
) -> TextTokenizer:
    """The T5 tokenizer: the checkpoint's own, or the text encoder's for audiocraft files."""
    if is_audiocraft_folder(folder):
        folder = resolve_text_encoder(text_encoder)
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise CheckpointError(
            f"{folder} has no tokenizer.json (the T5 tokenizer of the checkpoint)"
        )
    return TextTokenizer.from_file(path)


def load_model(
    folder: Path,
    config: MusicGenConfig,
    device: torch.device,
    dtype: torch.dtype,
    quantize: str | None = None,
    text_encoder: str | os.PathLike[str] | None = None,
    adapters: Sequence[Adapter] = (),
) -> MusicGenModel:
    """Build on `meta`, fill strictly from the checkpoint one tensor at a time, place on device.

    `dtype` applies to the decoder; the T5 encoder and the codec stay float32 (T5 overflows in
    fp16, and both are a small share of the run time). `quantize="int8"` stores the decoder's
    linear layers as int8, each weight converted as it is read: the full-precision copy of the
    decoder never exists in memory. audiocraft folders take T5 from `text_encoder`.
    `adapters` (LoRA) are merged into the weights they change as those are read, before
    quantizing.
    """
    if is_audiocraft_folder(folder):
        tensors = audiocraft_tensors(folder, resolve_text_encoder(text_encoder))
    else:
        tensors = hub_pairs(iter_tensors(weight_files(folder)))
    tensors = merged(tensors, adapters, where=str(folder))
    return fill_model(config, tensors, device, dtype, quantize, where=str(folder))


def load_checkpoint(
    name_or_path: str | os.PathLike[str],
    device: torch.device,
    dtype: torch.dtype,
    quantize: str | None = None,
    text_encoder: str | os.PathLike[str] | None = None,
) -> tuple[MusicGenModel, TextTokenizer]:
    """Everything `MusicGen.from_pretrained` needs, from a hub id or a folder of either layout."""
    folder = resolve_checkpoint(name_or_path)
    config = read_config(folder, text_encoder)
    tokenizer = load_tokenizer(folder, text_encoder)
    model = load_model(folder, config, device, dtype, quantize, text_encoder)
    return model, tokenizer


def fill_model(
    config: MusicGenConfig,
    tensors: Iterable[tuple[str, torch.Tensor]],
    device: torch.device,
    dtype: torch.dtype,
    quantize: str | None = None,
    where: str = "the checkpoint",
) -> MusicGenModel:
    """A model built on `meta` and filled strictly from (our name, tensor) pairs; weight-norm
    g / v pairs are folded. Every missing or unused tensor is reported by name."""
    with torch.device("meta"):
        model = MusicGenMelodyModel(config) if config.melody else MusicGenModel(config)
        if quantize is not None:
            # The decoder is most of the weights read per step; T5 (its token table too) is
            # most of the rest of the memory. The codec's convolutions stay float32.
            quantize_linears(model.decoder, quantize)
            quantize_linears(model.text_encoder, quantize)
            quantize_embeddings(model.text_encoder, ("embed_tokens",))
    expected = model.state_dict()
    quantized = {
        f"{name}.weight"
        for name, module in model.named_modules()
        if isinstance(module, (Int8Linear, Int8Embedding))
    }

    state: dict[str, torch.Tensor] = {}
    norm_parts: dict[str, torch.Tensor] = {}  # weight-norm g / v, folded once both are read
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

    for name, tensor in tensors:
        if is_weight_norm_part(name):
            norm_parts[name] = tensor
        else:
            place(name, tensor)
    for name, tensor in fold_weight_norm(norm_parts).items():
        place(name, tensor)

    missing = sorted(set(expected) - set(state))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint in {where} does not match the MusicGen layout: "
            f"missing {_names(missing)}; unexpected {_names(sorted(unexpected))}"
        )
    model.load_state_dict(state, strict=True, assign=True)
    state.clear()  # the model holds the tensors now
    release_freed_memory()  # the loading transients (the float32 checkpoint it read)
    return model.eval()


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
