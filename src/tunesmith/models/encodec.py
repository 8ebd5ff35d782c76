"""EnCodec (32 kHz, as MusicGen uses it): SEANet encoder and decoder around a residual vector
quantizer. Inference only; weight norm is folded into plain conv weights at load time.

Layer indices follow the checkpoint (`encoder.layers.N`, `decoder.layers.N`, ELUs included,
since they take a slot in the index), so the weight names need no map beyond the prefix.

Lengths: the encoder maps N samples to ceil(N / hop) frames (the input is padded on the right
so that the last window is full); the decoder maps T frames to exactly T * hop samples.
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

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """x padded the way this conv needs it; x itself where it needs no padding."""
        # Samples missing from the last window: ceil(N / stride) * stride - N, in integers
        # (transformers computes the same with float32 tensors).
        extra = -x.shape[-1] % self.stride
        if self.causal:
            left, right = self.padding_total, extra
        else:
            right = self.padding_total // 2
            left, right = self.padding_total - right, right + extra
        return _pad1d(x, left, right, self.pad_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pad(x))


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


class SEANetEncoder(nn.Module):
    """Waveform [B, C, N] -> latents [B, hidden, ceil(N / hop)], downsampling by the ratios
    in reverse order and doubling the width at each step."""

    def __init__(self, cfg: EncodecConfig) -> None:
        super().__init__()
        width = cfg.num_filters
        layers: list[nn.Module] = [PaddedConv1d(cfg, cfg.audio_channels, width, cfg.kernel_size)]
        for ratio in reversed(cfg.upsampling_ratios):
            layers += [
                ResnetBlock(cfg, width, cfg.dilation_growth_rate**j)
                for j in range(cfg.num_residual_layers)
            ]
            layers += [nn.ELU(), PaddedConv1d(cfg, width, width * 2, ratio * 2, stride=ratio)]
            width *= 2
        layers += [
            SkipLSTM(cfg, width),
            nn.ELU(),
            PaddedConv1d(cfg, width, cfg.hidden_size, cfg.last_kernel_size),
        ]
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def tail_radius(cfg: EncodecConfig) -> int:
    """Frames on either side of a frame that can change its samples in the decoder's tail
    (everything after the LSTM). An upper bound: every kernel counts its full width on both
    sides, and each transposed conv (kernel 2 * ratio) adds the two input frames it spans."""
    residual = (cfg.residual_kernel_size - 1) * sum(
        cfg.dilation_growth_rate**j for j in range(cfg.num_residual_layers)
    )
    radius = cfg.last_kernel_size - 1  # in samples at the output rate
    for ratio in reversed(cfg.upsampling_ratios):
        radius = -(-(radius + residual) // ratio) + 2  # now at the stage's input rate
    return radius


# Frames of the tail decoded at once (2 s at 50 Hz): a chunk's 32 kHz activations take ~17 MB
# each instead of ~80 MB per 10 s of audio. Measured on a 2-core CPU, the decode is also ~25%
# faster than in one pass (the chunks stay in cache), more than paying for the halo's 10%.
TAIL_CHUNK = 100


class SEANetDecoder(nn.Module):
    """Latents [B, hidden, T] -> waveform [B, C, T * hop], the encoder's mirror image.

    The first conv and the LSTM run over the whole sequence at the frame rate. The tail (the
    upsampling stages and the last conv) runs on chunks of frames with `halo` frames of context
    on each side that are cropped away: its receptive field is a few frames, so the result is
    the whole-sequence result up to float rounding, while the full-rate activations are only
    ever a chunk long.
    """

    def __init__(self, cfg: EncodecConfig) -> None:
        super().__init__()
        width = cfg.num_filters * 2 ** len(cfg.upsampling_ratios)
        layers: list[nn.Module] = [
            PaddedConv1d(cfg, cfg.hidden_size, width, cfg.kernel_size),
            SkipLSTM(cfg, width),
        ]
        for i, ratio in enumerate(cfg.upsampling_ratios):
            layers += [
                # Later stages apply it in place to their own block's output; the first one
                # must not: its input is a slice of the LSTM output that the chunks share.
                nn.ELU(inplace=i > 0),
                TrimmedConvTranspose1d(cfg, width, width // 2, ratio * 2, ratio),
            ]
            width //= 2
            layers += [
                ResnetBlock(cfg, width, cfg.dilation_growth_rate**j)
                for j in range(cfg.num_residual_layers)
            ]
        layers += [
            nn.ELU(inplace=True),
            PaddedConv1d(cfg, width, cfg.audio_channels, cfg.last_kernel_size),
        ]
        self.layers = nn.ModuleList(layers)
        self.hop, self.audio_channels = cfg.hop_length, cfg.audio_channels
        self.halo = tail_radius(cfg) + 2  # a margin over the bound costs little

    def forward(self, x: torch.Tensor, chunk: int = TAIL_CHUNK) -> torch.Tensor:
        """Latents [B, hidden, T] -> waveform [B, C, T * hop], the tail `chunk` frames at a time."""
        x = self.layers[1](self.layers[0](x))  # [B, width, T] at the frame rate
        b, _, frames = x.shape
        hop = self.hop
        # One preallocated output: collecting the chunks and concatenating would double it.
        out = x.new_empty(b, self.audio_channels, frames * hop)
        for start in range(0, frames, chunk):
            end = min(frames, start + chunk)
            # The true ends of the sequence get no halo, so they keep the real padding.
            left, right = max(0, start - self.halo), min(frames, end + self.halo)
            wav = self._tail(x[..., left:right])  # [B, C, (right - left) * hop]
            out[..., start * hop : end * hop] = wav[..., (start - left) * hop : (end - left) * hop]
        return out

    def _tail(self, x: torch.Tensor) -> torch.Tensor:
        """The layers after the LSTM on frames [B, width, n] -> samples [B, C, n * hop]."""
        for layer in self.layers[2:]:
            x = layer(x)
        return x


class Codebook(nn.Module):
    """One codebook: `embed` [codebook_size, codebook_dim]. The training-time EMA buffers
    (`inited`, `cluster_size`, `embed_avg`) are dropped when loading."""

    def __init__(self, cfg: EncodecConfig) -> None:
        super().__init__()
        # A frozen parameter rather than a buffer, so that it moves and counts with the weights.
        self.embed = nn.Parameter(
            torch.zeros(cfg.codebook_size, cfg.codebook_dim), requires_grad=False
        )

    def nearest(self, x: torch.Tensor) -> torch.Tensor:
        """x [M, dim] -> index of the nearest entry [M] (squared Euclidean distance).

        Written as ||x||^2 - 2 x.e + ||e||^2 in the same order as transformers, so that ties
        and near-ties round the same way and the codes match exactly.
        """
        embed = self.embed.t()  # [dim, codebook_size]
        dist = -(x.pow(2).sum(1, keepdim=True) - 2 * x @ embed + embed.pow(2).sum(0, keepdim=True))
        return dist.max(dim=-1).indices


class QuantizerLayer(nn.Module):
    """Holds one codebook under the checkpoint's name (`quantizer.layers.N.codebook`)."""

    def __init__(self, cfg: EncodecConfig) -> None:
        super().__init__()
        self.codebook = Codebook(cfg)


class ResidualVectorQuantizer(nn.Module):
    """Each layer quantizes what the layers before it left over; decoding sums the entries."""

    def __init__(self, cfg: EncodecConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(QuantizerLayer(cfg) for _ in range(cfg.num_quantizers))

    def _books(self) -> list[Codebook]:
        return [cast(QuantizerLayer, layer).codebook for layer in self.layers]

    def encode(self, latents: torch.Tensor, num_codebooks: int) -> torch.Tensor:
        """latents [B, dim, T] -> codes [B, K, T] (K = num_codebooks), greedy residual search."""
        b, _, t = latents.shape
        residual = latents.transpose(1, 2).reshape(b * t, -1)  # [B * T, dim]
        codes = []
        for book in self._books()[:num_codebooks]:
            idx = book.nearest(residual)
            residual = residual - F.embedding(idx, book.embed)
            codes.append(idx.view(b, t))
        return torch.stack(codes, dim=1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, K, T] -> latents [B, dim, T]: the sum of the K codebooks' entries."""
        books = self._books()
        out = F.embedding(codes[:, 0], books[0].embed)  # [B, T, dim]
        for k in range(1, codes.shape[1]):
            out = out + F.embedding(codes[:, k], books[k].embed)
        return out.transpose(1, 2)


class EncodecModel(nn.Module):
    """EnCodec: waveform <-> discrete codes. State dict names are transformers' `EncodecModel`
    names with weight norm folded and the codebooks' EMA buffers dropped."""

    def __init__(self, cfg: EncodecConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = SEANetEncoder(cfg)
        self.decoder = SEANetDecoder(cfg)
        self.quantizer = ResidualVectorQuantizer(cfg)

    def encode(self, wav: torch.Tensor, num_codebooks: int | None = None) -> torch.Tensor:
        """Waveform [B, C, N] (float, C = cfg.audio_channels) -> codes [B, K, ceil(N / hop)]
        (long), using the first `num_codebooks` codebooks (default: all of them)."""
        k = self.cfg.num_quantizers if num_codebooks is None else num_codebooks
        if not 1 <= k <= self.cfg.num_quantizers:
            raise ValueError(f"num_codebooks must be in 1..{self.cfg.num_quantizers}, got {k}")
        if wav.dim() != 3 or wav.shape[1] != self.cfg.audio_channels:
            raise ValueError(
                f"expected a waveform [B, {self.cfg.audio_channels}, N], got {tuple(wav.shape)}"
            )
        wav = wav.to(next(self.parameters()).dtype)  # an fp16/bf16 codec takes fp32 audio too
        return self.quantizer.encode(self.encoder(wav), k)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, K, T] (long, values < codebook_size, K <= cfg.num_quantizers) ->
        waveform [B, C, T * hop] in float32."""
        if codes.dim() != 3 or not 1 <= codes.shape[1] <= self.cfg.num_quantizers:
            raise ValueError(
                f"expected codes [B, K, T] with 1 <= K <= {self.cfg.num_quantizers}, "
                f"got {tuple(codes.shape)}"
            )
        return self.decoder(self.quantizer.decode(codes)).float()
