"""LoRA for training: a frozen linear layer plus a trainable low-rank update.

    y = W x + (alpha / r) * B A dropout(x),   A: [r, in] (Kaiming-uniform), B: [out, r] (zeros)

as PEFT defines it, so that the trained A and B mean the same in PEFT's format (a fresh
adapter changes nothing: B starts at zero). For inference the update is merged into W at
load time (`checkpoints.adapters`), so no step ever pays for it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoints.adapters import AdapterSettings, write_adapter
from ..checkpoints.hub_keys import hub_decoder_name
from ..errors import InvalidOptionError
from .settings import DEFAULT_TARGETS


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float) -> None:
        super().__init__()
        self.base = base
        self.base.requires_grad_(False)
        self.lora_A = nn.Linear(base.in_features, rank, bias=False)
        self.lora_B = nn.Linear(rank, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.lora_A.to(base.weight.device)
        self.lora_B.to(base.weight.device)
        self.scaling = alpha / rank
        self.p = dropout
        # CPU dropout draws 16 random bits an element (see _Masked): keep where a signed draw
        # is at least this, which makes the drop probability a multiple of 1/65536.
        self.threshold = round(dropout * 65536) - 32768

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, scale = x, self.scaling
        if self.training and self.p > 0:
            if x.device.type == "cpu":
                # Dropout's 1 / (1 - p) joins the scaling on the rank-r intermediate: A is
                # linear, so the mask alone is applied to x (one pass, not three).
                h = _Masked.apply(x, self.threshold)
                scale *= 65536 / (32768 - self.threshold)
            else:
                h = nn.functional.dropout(x, self.p, training=True)
        # The scaling on the rank-r intermediate (a few numbers a row, not a whole output),
        # and B's product added into the base output by the GEMM itself (addmm).
        low = self.lora_A(h) * scale
        base = self.base(x)
        out = torch.addmm(base.flatten(0, -2), low.flatten(0, -2), self.lora_B.weight.t())
        return out.view(base.shape)


class _Masked(torch.autograd.Function):
    """x where a random draw keeps it, else 0: dropout's mask without its scale.

    torch's CPU dropout draws a float per element (`bernoulli_`: a fifth of a LoRA step's
    time at musicgen-small size); here 16 random bits an element, four to one 64-bit draw,
    about five times faster. The backward pass reuses the boolean mask."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, threshold: int) -> torch.Tensor:
        words = -(-x.numel() // 4)
        bits = torch.randint(-(2**63), 2**63 - 1, (words,), dtype=torch.int64, device=x.device)
        keep = bits.view(torch.int16)[: x.numel()].view(x.shape) >= threshold
        ctx.save_for_backward(keep)
        return torch.where(keep, x, 0.0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (keep,) = ctx.saved_tensors
        return torch.where(keep, grad, 0.0), None


def targeted(module: nn.Module, targets: Sequence[str]) -> list[str]:
    """Names of the linear layers in `module` that a target names: the whole name, or its
    last dotted parts (`fc1`, `self_attn.q_proj`), as PEFT matches a list of names."""
    found = [
        name
        for name, child in module.named_modules()
        if isinstance(child, nn.Linear) and any(_names(name, t) for t in targets)
    ]
    unused = [t for t in targets if not any(_names(name, t) for name in found)]
    if unused:
        raise InvalidOptionError(
            f"LoRA target(s) {', '.join(unused)} name no linear layer of the decoder "
            f"(its layers: {', '.join(DEFAULT_TARGETS)}, lm_heads.N)"
        )
    return found


def add_lora(
    module: nn.Module, targets: Sequence[str], rank: int, alpha: float, dropout: float
) -> list[str]:
    """Freeze `module` and wrap each targeted linear layer in a LoRALinear; their names."""
    module.requires_grad_(False)
    names = targeted(module, targets)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        base = getattr(parent, child)
        setattr(parent, child, LoRALinear(base, rank, alpha, dropout))
    return names


def lora_weights(module: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{layer name: (A, B)} of every LoRALinear in `module`."""
    return {
        name: (child.lora_A.weight, child.lora_B.weight)
        for name, child in module.named_modules()
        if isinstance(child, LoRALinear)
    }


def _names(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def export_adapter(module: nn.Module, folder: Path, settings: AdapterSettings) -> Path:
    """The decoder's LoRA factors as a PEFT adapter folder (transformers' module names)."""
    factors = {hub_decoder_name(name): ab for name, ab in lora_weights(module).items()}
    return write_adapter(folder, factors, settings)


def store_frozen_linears(module: nn.Module, dtype: torch.dtype) -> int:
    """Keep every frozen linear weight of `module` in `dtype` (bfloat16 under autocast): the
    same values autocast would cast them to at every call, cast once. Trainable weights stay
    float32. The number of weights converted."""
    count = 0
    for child in module.modules():
        if isinstance(child, nn.Linear) and not child.weight.requires_grad:
            child.weight.data = child.weight.data.to(dtype)
            count += 1
    return count
