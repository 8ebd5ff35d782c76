"""The SEANet codec's layers (EnCodec's encoder and decoder are stacks of these).

Each runs on torch's [B, C, N] layout (`forward`, what training and the encoder use). The
layers after the decoder's LSTM also run time-major, on [B, N, C] (`forward_time_major`, the
decoder's tail at inference on a CPU): there oneDNN's convolutions take the channels-last
layout, ~2.5x faster than [B, C, N] for the codec's narrow, long convolutions on a 2-core CPU,
and need no padded copy of their input. The same sums, in another order: float rounding apart.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ..config import EncodecConfig


def _pad1d(x: torch.Tensor, left: int, right: int, mode: str) -> torch.Tensor:
    """F.pad that can also reflect an input shorter than the padding.

    Reflect padding needs more samples than it pads; for tiny inputs we zero-extend on the
    right first and cut that extension off again afterwards (transformers and audiocraft do
    the same, so very short clips give the same codes).
    """
    if left == right == 0:
        return x  # F.pad would still copy (1x1 convs): ~40 MB per 10 s at 32 kHz
    if mode != "reflect":
        return F.pad(x, (left, right), mode=mode)
    extra = max(0, max(left, right) - x.shape[-1] + 1)
    if extra:
        x = F.pad(x, (0, extra))
    padded = F.pad(x, (left, right), mode="reflect")
    return padded[..., : padded.shape[-1] - extra]


class PaddedConv1d(nn.Module):
    """Conv1d that covers every input sample and returns ceil(N / stride) frames.

    The fixed padding (effective kernel - stride) is split left/right (non-causal; the extra
    sample of an odd total goes left) or put entirely on the left (causal). On top of that the
    right side gets just enough to complete the last stride window.
    """

    def __init__(
        self,
        cfg: EncodecConfig,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_ch, out_ch, kernel_size, stride, dilation=dilation)
        self.causal, self.pad_mode = cfg.use_causal_conv, cfg.pad_mode
        self.stride = stride
        self.padding_total = (kernel_size - 1) * dilation + 1 - stride

    def padding(self, length: int) -> tuple[int, int]:
        """Samples padded on the left and on the right of an input of `length` samples."""
        # Samples missing from the last window: ceil(N / stride) * stride - N, in integers
        # (transformers computes the same with float32 tensors).
        extra = -length % self.stride
        if self.causal:
            return self.padding_total, extra
        right = self.padding_total // 2
        return self.padding_total - right, right + extra

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """x padded the way this conv needs it; x itself where it needs no padding."""
        return _pad1d(x, *self.padding(x.shape[-1]), self.pad_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pad(x))

    def forward_time_major(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, N, C] -> [B, N', out]: `forward` on the transposed layout (stride 1).

        One channels-last convolution with zero padding, then the few outputs whose window
        reaches into the padding are computed again from a padded copy of a few samples at
        each end (reflect or replicate padding is not zero)."""
        n = x.shape[1]
        span = self.padding_total + self.stride
        left, right = self.padding(n)
        if self.stride != 1 or n < 2 * (span + max(left, right)):  # short: the plain way
            return self.forward(x.transpose(1, 2)).transpose(1, 2)
        zeros = max(left, right)  # conv2d pads both sides alike: crop the side that needs less
        y = F.conv2d(
            x.transpose(1, 2).unsqueeze(2),  # [B, C, 1, N], channels-last strides
            self.conv.weight.unsqueeze(2),
            self.conv.bias,
            padding=(0, zeros),
            dilation=(1, self.conv.dilation[0]),
        )
        y = y.squeeze(2).transpose(1, 2)  # [B, N + 2 zeros - span + 1, out]
        y = y[:, zeros - left : zeros - left + n + left + right - span + 1]
        if left:
            y[:, :left] = self._ends(x[:, : span + left], left, 0)[:, :left]
        if right:
            y[:, -right:] = self._ends(x[:, n - span - right :], 0, right)[:, -right:]
        return y

    def _ends(self, x: torch.Tensor, left: int, right: int) -> torch.Tensor:
        """The conv of a few samples x [B, n, C] padded by `left` and `right` -> [B, n', out]."""
        return self.conv(_pad1d(x.transpose(1, 2), left, right, self.pad_mode)).transpose(1, 2)


class TrimmedConvTranspose1d(nn.Module):
    """ConvTranspose1d trimmed back to exactly `stride` output samples per input frame."""

    def __init__(
        self, cfg: EncodecConfig, in_ch: int, out_ch: int, kernel_size: int, stride: int
    ) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose1d(in_ch, out_ch, kernel_size, stride)
        padding_total = kernel_size - stride
        # Mirror of PaddedConv1d: non-causal trims the larger half on the left; causal trims
        # everything on the right (transformers' trim_right_ratio = 1, the only value allowed
        # for non-causal models and the one every released checkpoint uses).
        self.right = padding_total if cfg.use_causal_conv else padding_total // 2
        self.left = padding_total - self.right

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.conv.kernel_size[0], self.conv.stride[0]
        product = k == 2 * s and not torch.is_grad_enabled()
        y = self._as_product(x, s) if product else self.conv(x)  # [B, C, (T - 1) * s + k]
        return y[..., self.left : y.shape[-1] - self.right]

    def _as_product(self, x: torch.Tensor, s: int) -> torch.Tensor:
        """The transposed conv as one matrix product and an overlap-add, for kernel = 2 x
        stride (every EnCodec): each input frame's 2s outputs, [out, 2s] = W^T x_t, land on
        two stride-blocks of the output. ~3x faster on a CPU than torch's transposed conv
        (which reorders its weights on every call); the same sums in another order."""
        # The weight [in, out, 2s] read as [out * 2s, in]: a transposed view, which the matrix
        # product takes as it is (no copy).
        weight = self.conv.weight
        w = weight.reshape(weight.shape[0], -1).t()
        b, _, t = x.shape
        out = w.shape[0] // (2 * s)
        y = x.new_empty(b, out, t + 1, s)
        for row in range(b):  # one row's products at a time: twice the output, not 2B times
            z = torch.matmul(w, x[row]).view(out, 2, s, t)  # [out, half, j, T]
            y[row, :, :t] = z[:, 0].transpose(-1, -2)
            y[row, :, t] = 0
            y[row, :, 1:] += z[:, 1].transpose(-1, -2)
        if self.conv.bias is not None:
            y += self.conv.bias[None, :, None, None]
        return y.view(b, out, (t + 1) * s)

    def forward_time_major(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, C] -> [B, T * stride, out]: `forward` on the transposed layout.

        Kernel = 2 x stride as above, with each half of the kernel as one product: output
        block t (stride x out samples, contiguous here) is x_t W_first + x_(t-1) W_second, so
        the first product writes the blocks and the second adds into them in place (no
        [T, 2, stride, out] intermediate to add up afterwards)."""
        k, s = self.conv.kernel_size[0], self.conv.stride[0]
        if k != 2 * s:
            return self.forward(x.transpose(1, 2)).transpose(1, 2)
        weight = self.conv.weight  # [in, out, 2s]
        b, t, c = x.shape
        out = weight.shape[1]
        halves = weight.view(c, out, 2, s).permute(2, 0, 3, 1)  # [half, in, j, out]
        first, second = (h.reshape(c, s * out) for h in halves)  # copies: <5% of the products
        tiled = None if self.conv.bias is None else self.conv.bias.repeat(s)  # a block's bias
        y = x.new_empty(b, t + 1, s * out)
        for row in range(b):  # one row at a time: each product's output is one matrix
            if tiled is None:
                torch.mm(x[row], first, out=y[row, :t])
                y[row, t] = 0
            else:
                torch.addmm(tiled, x[row], first, out=y[row, :t])
                y[row, t] = tiled  # the last block has no first half
            y[row, 1:].addmm_(x[row], second)
        y = y.view(b, (t + 1) * s, out)
        return y[:, self.left : y.shape[1] - self.right]


class SkipLSTM(nn.Module):
    """Multi-layer LSTM over time with a residual connection, on conv layout [B, C, T]."""

    def __init__(self, cfg: EncodecConfig, dim: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(dim, dim, cfg.num_lstm_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = x.permute(2, 0, 1)  # [T, B, C]: nn.LSTM is time-first by default
        return (self.lstm(seq)[0] + seq).permute(1, 2, 0)


class ResnetBlock(nn.Module):
    """ELU -> dilated conv (dim -> dim / compress) -> ELU -> 1x1 conv (back to dim), plus skip.

    The skip is a 1x1 conv when `use_conv_shortcut` (transformers' default) and the identity
    otherwise (the 32 kHz MusicGen codec).
    """

    def __init__(self, cfg: EncodecConfig, dim: int, dilation: int) -> None:
        super().__init__()
        hidden = dim // cfg.compress
        self.block = nn.ModuleList(
            [
                nn.ELU(inplace=True),  # on the padded copy of the input, see forward
                PaddedConv1d(cfg, dim, hidden, cfg.residual_kernel_size, dilation=dilation),
                nn.ELU(inplace=True),  # its input is a fresh conv output: no copy needed
                PaddedConv1d(cfg, hidden, dim, 1),
            ]
        )
        self.shortcut: nn.Module = (
            PaddedConv1d(cfg, dim, dim, 1) if cfg.use_conv_shortcut else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act, conv = self.block[0], cast(PaddedConv1d, self.block[1])
        # In place wherever the input is not needed again: at 32 kHz each of these tensors is
        # ~80 MB per 10 s of audio. The ELU commutes with the padding (reflect and replicate
        # copy samples, ELU(0) = 0), so it runs on the padded copy instead of making its own.
        y = conv.pad(x)
        y = conv.conv(act(x.clone() if y is x else y))
        for layer in self.block[2:]:
            y = layer(y)
        return y.add_(self.shortcut(x))

    def forward_time_major(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, N, C] -> [B, N, C]: `forward` on the transposed layout."""
        act = cast(nn.ELU, self.block[0])
        y = F.elu(x, act.alpha)  # not in place: x is the skip
        for layer in self.block[1:]:
            y = run_time_major(layer, y)
        return y.add_(run_time_major(self.shortcut, x))


def run_time_major(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One decoder-tail layer on x [B, N, C] (time-major); elementwise layers as they are."""
    if isinstance(layer, (nn.ELU, nn.Identity)):
        return layer(x)
    if isinstance(layer, (PaddedConv1d, TrimmedConvTranspose1d, ResnetBlock)):
        return layer.forward_time_major(x)
    raise TypeError(f"no time-major form of {type(layer).__name__}")
