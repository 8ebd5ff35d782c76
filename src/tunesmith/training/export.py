"""`--full`: the fine-tuned decoder written back as a complete checkpoint in the hub layout.

The source checkpoint's files are copied (config, tokenizer) and its tensors rewritten with
the decoder's trained weights under transformers' names, so the folder loads in tunesmith
and in `MusicgenForConditionalGeneration.from_pretrained` alike.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from torch import nn

from ..checkpoints.audiocraft_files import is_audiocraft_folder
from ..checkpoints.hub import iter_tensors, weight_files
from ..checkpoints.hub_keys import rename_hf_key
from ..errors import TrainingDataError

WEIGHTS = "model.safetensors"


def check_exportable(source: Path) -> None:
    """--full writes the hub layout from a hub-layout source (before any training)."""
    if is_audiocraft_folder(source):
        raise TrainingDataError(
            f"--full writes a checkpoint in the hub layout, and {source} is in audiocraft's; "
            "train a LoRA adapter instead (the default), which loads on either"
        )


def export_full(source: Path, decoder: nn.Module, out: Path) -> Path:
    """Write `out` as `source` with the decoder's weights replaced; the folder written."""
    from safetensors.torch import save_file

    trained = {f"decoder.{k}": v for k, v in decoder.state_dict().items()}
    tensors: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for key, tensor in iter_tensors(weight_files(source)):
        ours = rename_hf_key(key)
        if ours in trained:
            tensor = trained[ours].detach().to("cpu", tensor.dtype)
            used.add(ours)
        tensors[key] = tensor.contiguous()
    left = sorted(set(trained) - used)
    if left:
        raise RuntimeError(f"trained decoder tensors with no place in {source}: {left[:4]}")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for file in source.iterdir():
        if file.is_file() and not file.name.endswith((".safetensors", ".safetensors.index.json")):
            shutil.copy2(file, tmp / file.name)
    save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "pt"})
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    return out
