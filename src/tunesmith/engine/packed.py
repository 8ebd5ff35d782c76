"""Float32 weights packed for our few-row CPU kernel (`kernels.cpu`), in place of nn.Linear.

A decoder step multiplies 2 rows by 1.4 GB of float32 weights, and torch's sgemm reaches about
a quarter of the memory bandwidth on 2 cores at M=2. Packed once, at load time, into the
kernels' blocked layout (4 output rows x 16 inputs, K-chunk by K-chunk), each thread reads one
increasing address range with a software prefetch a fixed distance ahead.

Numerics: float32 weights, float32 activations, float32 FMA accumulation; only the order of
the sum differs from torch's. `PackedLinear` holds the packed weight (the only copy); for more
rows than `MAX_ROWS` (a long prefill) it unpacks a temporary [out, in] copy for torch's GEMM,
which is then the faster of the two.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels.cpu import build, layout
from ..kernels.cpu.ops import Kernels

MAX_ROWS = 128  # above this torch's GEMM (on the unpacked weight) wins, 1 or 2 threads here


class PackedLinear(nn.Module):
    """A bias-free float32 Linear whose weight is kept (once) in the kernel's packed layout.

    `from_linear` returns None where the kernel does not apply (device, dtype, shape, no
    compiler); `unpacked_weight()` gives the [out, in] matrix back."""

    weight: torch.Tensor

    def __init__(self, weight: torch.Tensor, chunk: int, kernels: Kernels) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.chunk, self.kernels = chunk, kernels
        # A parameter, as in nn.Linear: parameter counts and `.parameters()` users see it.
        packed = layout.pack(weight.detach(), chunk)
        self.weight = nn.Parameter(packed, requires_grad=False)

    @classmethod
    def from_linear(cls, linear: nn.Linear, kernels: Kernels | None = None) -> PackedLinear | None:
        """`linear` packed for this CPU's build (or `kernels`), or None where the kernel does
        not apply."""
        w = linear.weight
        chunk = layout.chunk_for(linear.in_features)
        if (
            linear.bias is not None
            or w.device.type != "cpu"
            or w.dtype != torch.float32
            or chunk is None
            or not layout.fits(linear.out_features, linear.in_features)
        ):
            return None
        kernels = kernels or build.kernels()
        return None if kernels is None else cls(w, chunk, kernels)

    def unpacked_weight(self) -> torch.Tensor:
        return layout.unpack(self.weight, self.out_features, self.in_features, self.chunk)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        if (
            flat.shape[0] <= MAX_ROWS
            and flat.dtype == self.weight.dtype == torch.float32
            and flat.device.type == "cpu"
        ):
            out = self.kernels.fp32_linear(
                flat.contiguous(), self.weight, self.out_features, self.chunk
            )
        else:  # many rows, or moved off the CPU / float32 since packing
            out = F.linear(flat, self.unpacked_weight().to(flat.dtype))
        return out.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed fp32"
