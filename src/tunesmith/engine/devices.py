"""Choosing the device and dtype once, at load time."""

from __future__ import annotations

import torch

from ..errors import InvalidOptionError


def resolve_device(name: str | torch.device | None) -> torch.device:
    """'auto' or None -> CUDA, then MPS, then CPU; otherwise a device torch knows and has."""
    if isinstance(name, torch.device):
        return name
    if name is None or name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise InvalidOptionError(
            f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise InvalidOptionError(f"unsupported device {name!r}: use auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidOptionError(f"device {name!r} asked for, but no CUDA GPU is available")
    if (
        device.type == "cuda"
        and device.index is not None
        and device.index >= torch.cuda.device_count()
    ):
        raise InvalidOptionError(
            f"device {name!r} asked for, but only {torch.cuda.device_count()} GPU(s)"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidOptionError(f"device {name!r} asked for, but MPS is not available")
    return device


def default_dtype(device: torch.device) -> torch.dtype:
    """fp32 on CPU (exact parity, and CPU half matmuls are slow); fp16 on GPUs."""
    return torch.float32 if device.type == "cpu" else torch.float16


def has_fast_bf16(device: torch.device) -> bool:
    """Whether bfloat16 matrix products run natively here: a CUDA GPU that supports them, or
    a CPU with AMX or AVX512-BF16 (elsewhere torch emulates them, slower than float32)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # torch >= 2.3
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)
