"""From a loaded decoder to the `Step` that runs it: the one place an engine is chosen.

`fuse` repacks the weights for inference (the same weights, in place): each self-attention's
q, k, v as one product, and on an x86-64 CPU every product in our kernels' packed layout
(int8 ones with GELU inside fc1's kernel, float32 ones as `PackedLinear`), read from huge
pages. `build_step` then picks, once, how steps run:

    CUDA + compile  -> CudaGraphStep over inductor's static step
    CUDA            -> EagerStep (compile=False keeps the step as written)
    CPU, kernels    -> CpuKernelStep (one C++ call a step)
    CPU + compile   -> TorchCompileStep (only where our kernels cannot be built)
    otherwise       -> EagerStep
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from ..kernels.cpu import build
from ..kernels.cpu.ops import Kernels
from ..models.lm import Attention, DecoderLayer, MusicGenLM
from .compiled_step import TorchCompileStep, warm_up
from .cpu_step import CpuKernelStep, CpuStep
from .cuda_graphs import CudaGraphStep, compile_static
from .hugepages import move_to_huge_pages
from .int8 import Int8Linear
from .memory import release_freed_memory
from .packed import PackedLinear
from .step import EagerStep, Step

# Projections of the text, run once per generation on many rows: not worth packing.
_ONCE_PER_CALL = ("encoder_attn.k_proj", "encoder_attn.v_proj")


def build_step(lm: MusicGenLM, compile: bool = False, kernels: Kernels | None = None) -> Step:
    """Fuse `lm` for inference (for this CPU's kernel build, or `kernels`) and choose how its
    steps run (see the module docstring)."""
    device = next(lm.parameters()).device
    kernel = fuse(lm, kernels)
    release_freed_memory()  # the float32 copies that packing replaced
    if device.type == "cuda" and compile:
        return CudaGraphStep(lm, static=compile_static(lm))
    if kernel is not None:
        return CpuKernelStep.for_decoder(lm, kernel)
    if compile and device.type == "cpu":
        return warm_up(TorchCompileStep(lm))
    return EagerStep(lm)


def fuse(lm: MusicGenLM, kernels: Kernels | None = None) -> CpuStep | None:
    """Repack `lm`'s weights in place for inference, for this CPU's kernel build (or
    `kernels`); the C++ step over them where every product landed in our kernels, else None."""
    for layer in lm.layers:
        fuse_qkv(cast(DecoderLayer, layer).self_attn)
    if next(lm.parameters()).device.type != "cpu":
        return None
    kernels = kernels or build.kernels()
    if kernels is None:
        return None
    # By name, not a list of modules: that list would keep every replaced layer's float32
    # weight alive until the end, two copies of the decoder at once.
    for name in [name for name, _ in lm.named_modules()]:
        module = lm.get_submodule(name)
        if isinstance(module, Int8Linear):
            if module.pack_for_cpu(kernels) and name.endswith(".fc1"):
                module.gelu = True  # applied in the kernel, as its outputs are finished
                layer = cast(DecoderLayer, lm.get_submodule(name.removesuffix(".fc1")))
                layer.activation = nn.Identity()
        elif isinstance(module, nn.Linear) and not name.endswith(_ONCE_PER_CALL):
            packed = PackedLinear.from_linear(module, kernels)
            if packed is not None:
                parent, _, attr = name.rpartition(".")
                setattr(lm.get_submodule(parent), attr, packed)
    streamed = [
        (module, "weight")
        for module in lm.modules()
        if (isinstance(module, Int8Linear) and module.chunk is not None)
        or isinstance(module, PackedLinear)
    ]
    move_to_huge_pages(streamed)  # read every step: fewer TLB misses in 2 MiB pages
    return CpuStep.for_decoder(lm)  # after the move: it holds the weights


def fuse_qkv(attn: Attention) -> None:
    """One [3D, D] product instead of three per step (fewer kernel launches and reads); the
    separate projections are dropped. Self-attention only: cross-attention projects its keys
    and values once per call."""
    parts = [attn.q_proj, attn.k_proj, attn.v_proj]
    if all(isinstance(p, Int8Linear) for p in parts):
        attn.qkv_proj = Int8Linear.concat(cast(list[Int8Linear], parts))
    else:
        w = torch.cat([cast(nn.Linear, p).weight for p in parts])
        fused = nn.Linear(w.shape[1], w.shape[0], bias=False, device=w.device, dtype=w.dtype)
        fused.weight = nn.Parameter(w, requires_grad=False)
        attn.qkv_proj = fused
    del attn.q_proj, attn.k_proj, attn.v_proj
