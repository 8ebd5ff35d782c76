"""Weight-only int8 for the decoder's linear layers, swapped in at load time.

Each output row gets its own scale (symmetric, max-abs / 127). On CPU the matrix product runs
in torch's int8 weight-pack kernel with bfloat16 activations, or, once the engine prepares the
decoder (`prepare.fuse` -> `pack_for_cpu`), in our int8 kernel (`kernels.cpu`) with float32
activations: the decoder step reads a quarter of the fp32 bytes, and reading weights is what
bounds it on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels.cpu import build, layout
from ..kernels.cpu.ops import Kernels
from ..options import QUANTIZE_MODES


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[out, in] float -> (int8 [out, in], scales [out] float32), symmetric per row."""
    w = weight.detach().float()
    scales = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scales


class Int8Linear(nn.Module):
    """A bias-free Linear with int8 weights and per-row scales.

    After `pack_for_cpu()` the weight buffer holds the kernels' blocked layout (`layout`) (flat) and the
    product runs in that kernel; `unpacked_weight()` gives the [out, in] matrix either way.
    """

    weight: torch.Tensor
    scales: torch.Tensor

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.chunk: int | None = None  # set when packed: input columns per kernel pass
        self.gelu = False  # apply GELU to the output (in the kernel, when packed)
        self.scales_f32: torch.Tensor | None = None
        self.kernels: Kernels | None = None  # the build it was packed for
        self.block = layout.STANDARD  # that build's int8 blocks, once packed
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scales", torch.ones(out_features, dtype=torch.bfloat16))

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        if linear.bias is not None:
            raise ValueError("Int8Linear takes bias-free layers (the MusicGen decoder has none)")
        module = cls(linear.in_features, linear.out_features)
        q, scales = quantize_rows(linear.weight)
        module.weight, module.scales = q, scales.to(torch.bfloat16)
        return module

    @classmethod
    def concat(cls, parts: list[Int8Linear]) -> Int8Linear:
        """One layer computing the given layers' outputs side by side (rows stacked)."""
        module = cls(parts[0].in_features, sum(p.out_features for p in parts))
        module.weight = torch.cat([p.unpacked_weight() for p in parts])
        module.scales = torch.cat([p.scales for p in parts])
        return module

    def unpacked_weight(self) -> torch.Tensor:
        if self.chunk is None:
            return self.weight
        return layout.unpack(
            self.weight, self.out_features, self.in_features, self.chunk, self.block
        )

    def pack_for_cpu(self, kernels: Kernels | None = None) -> bool:
        """Switch to our int8 kernel (this CPU's build, or `kernels`) where it applies (CPU,
        shapes, a compiler); True if it did. The effective weights (int8 x bfloat16 scales)
        are unchanged."""
        chunk = layout.chunk_for(self.in_features)
        if self.chunk is not None or self.weight.device.type != "cpu" or chunk is None:
            return False
        kernels = kernels or build.kernels()
        if kernels is None:
            return False
        block = kernels.int8_block
        if not layout.fits(self.out_features, self.in_features, block):
            return False
        self.weight = layout.pack(self.weight, chunk, block)
        self.scales_f32 = self.scales.float()
        self.chunk, self.kernels, self.block = chunk, kernels, block
        return True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        if self.chunk is not None and self.scales_f32 is not None and self.kernels is not None:
            flat32 = x.reshape(-1, shape[-1]).float().contiguous()
            out = self.kernels.int8_linear(
                flat32, self.weight, self.scales_f32, self.chunk, self.gelu
            )
            return out.to(x.dtype).reshape(*shape[:-1], self.out_features)
        flat = x.reshape(-1, shape[-1]).to(torch.bfloat16)
        if flat.device.type == "cpu":
            out = torch._weight_int8pack_mm(flat, self.weight, self.scales)
        else:  # the same arithmetic, for devices without the kernel
            out = F.linear(flat, self.weight.to(flat.dtype)) * self.scales
        out = F.gelu(out) if self.gelu else out
        return out.to(x.dtype).reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        gelu = ", gelu" if self.gelu else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, int8{gelu}"


class Int8Embedding(nn.Module):
    """An embedding table stored as int8 rows with a scale each (a quarter of the float32
    memory; T5-base's table alone is ~0.1 GB). Looks up float32 vectors."""

    weight: torch.Tensor
    scales: torch.Tensor

    def __init__(self, num_embeddings: int, embedding_dim: int) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        shape = (num_embeddings, embedding_dim)
        self.register_buffer("weight", torch.zeros(shape, dtype=torch.int8))
        self.register_buffer("scales", torch.ones(num_embeddings, dtype=torch.bfloat16))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.weight[ids].float() * self.scales[ids, None].float()

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8"


def quantize_embeddings(module: nn.Module, names: tuple[str, ...]) -> nn.Module:
    """Replace the nn.Embedding children called one of `names` under `module`, in place (on
    `meta`: the loader fills them)."""
    for parent in list(module.modules()):
        for attr, leaf in list(parent.named_children()):
            if isinstance(leaf, nn.Embedding) and attr in names:
                setattr(parent, attr, Int8Embedding(leaf.num_embeddings, leaf.embedding_dim))
    return module


def quantize_linears(
    module: nn.Module, mode: str, keep: Callable[[str], bool] = lambda name: False
) -> nn.Module:
    """Replace every bias-free nn.Linear under `module` (except names `keep` accepts) in place."""
    if mode not in QUANTIZE_MODES:
        raise ValueError(f"unknown quantization {mode!r}: choose from {', '.join(QUANTIZE_MODES)}")
    for name, child in list(module.named_modules()):
        for attr, leaf in list(child.named_children()):
            full = f"{name}.{attr}" if name else attr
            if isinstance(leaf, nn.Linear) and leaf.bias is None and not keep(full):
                setattr(child, attr, Int8Linear.from_linear(leaf))
    return module
