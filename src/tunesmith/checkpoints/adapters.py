"""LoRA adapters in PEFT's format: read, merged into the weights as they load, and written.

A folder holds `adapter_config.json` (PEFT's LoraConfig) and `adapter_model.safetensors`,
whose keys are transformers' module names under `base_model.model.` (e.g.
`base_model.model.decoder.model.decoder.layers.0.self_attn.q_proj.lora_A.weight`), so the same
folder loads with `PeftModel.from_pretrained(MusicgenForConditionalGeneration...)`.

Merging: W' = W + scale * (alpha / r) * B @ A (transposed for an embedding), computed for one
weight at a time as the checkpoint streams past, before any quantization: int8, the C++ step
and CUDA graphs then run the adapted weights unchanged, at no cost per step.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from .hub_keys import rename_hf_key

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
LEGACY_WEIGHTS_FILE = "adapter_model.bin"
PREFIX = "base_model.model."
# PEFT's key suffixes: (suffix, is an embedding's, which factor)
_PARTS = {
    ".lora_A.weight": (False, "A"),
    ".lora_B.weight": (False, "B"),
    ".lora_embedding_A": (True, "A"),
    ".lora_embedding_B": (True, "B"),
}


@dataclass(frozen=True)
class LowRank:
    """One layer's update: B @ A times `scaling` (alpha / r, or alpha / sqrt(r) with rsLoRA)."""

    a: torch.Tensor  # [r, in] (an embedding's: [r, rows])
    b: torch.Tensor  # [out, r] (an embedding's: [dim, r])
    scaling: float
    embedding: bool = False

    def delta(self) -> torch.Tensor:
        product = self.b.float() @ self.a.float()
        return (product.t() if self.embedding else product) * self.scaling


@dataclass(frozen=True)
class Adapter:
    """A read adapter: our weight name -> its update, and what it says of itself."""

    path: Path
    scale: float
    updates: Mapping[str, LowRank]
    rank: int
    base_model: str | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.path.name,
            "path": str(self.path),
            "scale": self.scale,
            "rank": self.rank,
            "layers": len(self.updates),
        }


@dataclass(frozen=True)
class AdapterSettings:
    """What adapter_config.json records of how an adapter was made."""

    rank: int
    alpha: float
    dropout: float
    base_model: str


def read_adapter(path: str | os.PathLike[str], scale: float = 1.0) -> Adapter:
    """An adapter folder in PEFT's LoRA format; every way it could be unusable, one clear error."""
    folder = Path(path).expanduser()
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise CheckpointError(f"{path} is not an adapter folder: it has no {CONFIG_FILE}")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{config_path} cannot be read: {err}") from None
    _check_config(config, path)
    tensors = _read_tensors(folder, path)
    parts: dict[str, dict[str, torch.Tensor]] = {}
    embeddings: set[str] = set()
    for key, tensor in tensors.items():
        module = key.removeprefix(PREFIX)
        for suffix, (is_embedding, which) in _PARTS.items():
            if module.endswith(suffix):
                module = module[: -len(suffix)]
                parts.setdefault(module, {})[which] = tensor
                if is_embedding:
                    embeddings.add(module)
                break
        else:
            raise CheckpointError(f"adapter {path} holds {key!r}, which is not a LoRA factor")
    updates: dict[str, LowRank] = {}
    ranks = set()
    for module, ab in sorted(parts.items()):
        if set(ab) != {"A", "B"}:
            raise CheckpointError(f"adapter {path} has only lora_{''.join(ab)} for {module}")
        name = rename_hf_key(f"{module}.weight")
        if name is None:
            raise CheckpointError(f"adapter {path} targets {module}, which inference does not use")
        rank = ab["A"].shape[0]
        ranks.add(rank)
        alpha = float(
            _pattern_value(config.get("alpha_pattern") or {}, module, config["lora_alpha"])
        )
        scaling = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
        updates[name] = LowRank(ab["A"], ab["B"], scaling, embedding=module in embeddings)
    if not updates:
        raise CheckpointError(f"adapter {path} holds no LoRA weights")
    return Adapter(
        path=folder,
        scale=scale,
        updates=updates,
        rank=max(ranks),
        base_model=config.get("base_model_name_or_path"),
    )


AdapterPaths = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None
AdapterScales = float | Sequence[float] | None


def read_adapters(paths: AdapterPaths, scales: AdapterScales = None) -> list[Adapter]:
    """No adapter, one, or several, each with its scale (one scale for all, or one each;
    default 1)."""
    folders = (
        [] if paths is None else [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    )
    given = [] if scales is None else [scales] if isinstance(scales, (int, float)) else list(scales)
    if len(given) > 1 and len(given) != len(folders):
        raise CheckpointError(
            f"{len(given)} adapter scales for {len(folders)} adapters: give one, or one each"
        )
    if given and not folders:
        raise CheckpointError("an adapter scale needs an adapter")
    each = given if len(given) > 1 else [given[0] if given else 1.0] * len(folders)
    return [read_adapter(p, s) for p, s in zip(folders, each, strict=True)]


def merged(
    tensors: Iterable[tuple[str, torch.Tensor]], adapters: Sequence[Adapter], where: str
) -> Iterator[tuple[str, torch.Tensor]]:
    """The checkpoint's (name, tensor) pairs with every adapter's update added to its weight;
    an update whose weight never comes, or of another shape, is an error naming it."""
    if not adapters:
        yield from tensors
        return
    wanted = {name for a in adapters for name in a.updates}
    seen: set[str] = set()
    for name, tensor in tensors:
        if name in wanted:
            weight = tensor.float()
            for adapter in adapters:
                update = adapter.updates.get(name)
                if update is None:
                    continue
                delta = update.delta()
                if delta.shape != weight.shape:
                    raise CheckpointError(
                        f"adapter {adapter.path} was made for another model: {name} is "
                        f"{list(weight.shape)} in {where}, the adapter's update {list(delta.shape)}"
                    )
                weight = weight + adapter.scale * delta
            tensor = weight.to(tensor.dtype)
            seen.add(name)
        yield name, tensor
    missing = sorted(wanted - seen)
    if missing:
        raise CheckpointError(
            f"adapter targets {len(missing)} layer(s) that {where} lacks "
            f"({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''})"
        )


def write_adapter(
    folder: Path,
    factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    settings: AdapterSettings,
) -> Path:
    """Write {transformers module name: (A, B)} as a PEFT LoRA adapter folder."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for module, (a, b) in factors.items():
        tensors[f"{PREFIX}{module}.lora_A.weight"] = a.detach().float().cpu().contiguous()
        tensors[f"{PREFIX}{module}.lora_B.weight"] = b.detach().float().cpu().contiguous()
    config: dict[str, Any] = {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": settings.base_model,
        "r": settings.rank,
        "lora_alpha": settings.alpha,
        "lora_dropout": settings.dropout,
        "target_modules": sorted(factors),  # whole names: PEFT matches exactly these
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
        "rank_pattern": {},
        "alpha_pattern": {},
    }
    # Weights first, then the config that makes the folder an adapter: a crash between the
    # two leaves no folder that looks complete but is not.
    tmp = folder / f".{WEIGHTS_FILE}.tmp"
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    tmp.replace(folder / WEIGHTS_FILE)
    tmp_config = folder / f".{CONFIG_FILE}.tmp"
    tmp_config.write_text(json.dumps(config, indent=2) + "\n")
    tmp_config.replace(folder / CONFIG_FILE)
    return folder


def _check_config(config: dict[str, Any], path: object) -> None:
    kind = config.get("peft_type")
    if kind != "LORA":
        raise CheckpointError(f"adapter {path} is a {kind} adapter; tunesmith loads LoRA ones")
    refused = {
        "use_dora": "DoRA adapters cannot be merged as plain LoRA",
        "fan_in_fan_out": "fan_in_fan_out is for GPT-2's Conv1D layers, which MusicGen lacks",
        "modules_to_save": "it saves whole modules (modules_to_save), not only LoRA factors",
    }
    for key, why in refused.items():
        if config.get(key):
            raise CheckpointError(f"adapter {path} cannot be loaded: {why}")
    if config.get("bias", "none") != "none":
        raise CheckpointError(
            f"adapter {path} trains biases (bias={config['bias']!r}); not supported"
        )
    if "lora_alpha" not in config:
        raise CheckpointError(f"adapter {path}'s {CONFIG_FILE} has no lora_alpha")


def _read_tensors(folder: Path, path: object) -> dict[str, torch.Tensor]:
    weights = folder / WEIGHTS_FILE
    legacy = folder / LEGACY_WEIGHTS_FILE
    try:
        if weights.is_file():
            from safetensors.torch import load_file

            return load_file(str(weights))
        if legacy.is_file():
            return dict(torch.load(legacy, map_location="cpu", weights_only=True))
    except Exception as err:  # a truncated or foreign file: say which, lose nothing
        raise CheckpointError(f"adapter weights in {path} cannot be read: {err}") from None
    raise CheckpointError(f"adapter {path} has {CONFIG_FILE} but no {WEIGHTS_FILE}")


def _pattern_value(patterns: Mapping[str, Any], module: str, default: Any) -> Any:
    """PEFT's per-layer override (rank_pattern / alpha_pattern): a key matching the end of
    the module's name."""
    for pattern, value in patterns.items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            return value
    return default
