"""EnCodec (32 kHz, as MusicGen uses it): SEANet encoder and decoder around a residual vector
quantizer. Inference only; weight norm is folded into plain conv weights at load time.

Layer indices follow the checkpoint (`encoder.layers.N`, `decoder.layers.N`, ELUs included),
so the weight names need no map.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ..config import EncodecConfig


def _pad1d(x: torch.Tensor, left: int, right: int, mode: str) -> torch.Tensor:
    """F.pad that also reflects inputs shorter than the padding (zero-extend first, then trim)."""
    if mode != "reflect":
        return F.pad(x, (left, right), mode=mode)
    length = x.shape[-1]
    extra = max(0, max(left, right) - length + 1)
    if extra:
        x = F.pad(x, (0, extra))
    padded = F.pad(x, (left, right), mode="reflect")
    return padded[..., : padded.shape[-1] - extra]


class PaddedConv1d(nn.Module):
    """Conv1d padded so that every input sample is covered and the output has ceil(N / stride)
    frames: SEANet's symmetric (non-causal) or left-only (causal) padding plus right padding
    to complete the last window."""

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
        self.effective_kernel = (kernel_size - 1) * dilation + 1
        self.padding_total = self.effective_kernel - stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[-1]
        frames = (
            math.ceil((length - self.effective_kernel + self.padding_total) / self.stride + 1) - 1
        )
        extra = frames * self.stride + self.effective_kernel - self.padding_total - length
        if self.causal:
            left, right = self.padding_total, extra
        else:
            right = self.padding_total // 2
            left, right = self.padding_total - right, right + extra
        return self.conv(_pad1d(x, left, right, self.pad_mode))


class TrimmedConvTranspose1d(nn.Module):
    """ConvTranspose1d whose output is trimmed back to exactly `stride` samples per input frame."""

    def __init__(
        self, cfg: EncodecConfig, in_ch: int, out_ch: int, kernel_size: int, stride: int
    ) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose1d(in_ch, out_ch, kernel_size, stride)
        padding_total = kernel_size - stride
        # Non-causal models trim symmetrically; causal ones (not used by MusicGen) from the right.
        self.right = padding_total // 2 if not cfg.use_causal_conv else padding_total
        self.left = padding_total - self.right

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y[..., self.left : y.shape[-1] - self.right]


class SkipLSTM(nn.Module):
    """LSTM over time with a residual connection, on conv layout [B, C, T]."""

    def __init__(self, cfg: EncodecConfig, dim: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(dim, dim, cfg.num_lstm_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = x.permute(2, 0, 1)  # [T, B, C]
        return (self.lstm(seq)[0] + seq).permute(1, 2, 0)


class ResnetBlock(nn.Module):
    """ELU -> dilated conv (dim -> dim / compress) -> ELU -> 1x1 conv (back to dim), plus skip."""

    def __init__(self, cfg: EncodecConfig, dim: int, dilation: int) -> None:
        super().__init__()
        hidden = dim // cfg.compress
        self.block = nn.ModuleList(
            [
                nn.ELU(),
                PaddedConv1d(cfg, dim, hidden, cfg.residual_kernel_size, dilation=dilation),
                nn.ELU(),
                PaddedConv1d(cfg, hidden, dim, 1),
            ]
        )
        self.shortcut: nn.Module = (
            PaddedConv1d(cfg, dim, dim, 1) if cfg.use_conv_shortcut else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for layer in self.block:
            y = layer(y)
        return self.shortcut(x) + y


class SEANetEncoder(nn.Module):
    """Waveform [B, C, N] -> latents [B, hidden, N / hop], downsampling by reversed ratios."""

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


class SEANetDecoder(nn.Module):
    """Latents [B, hidden, T] -> waveform [B, C, T * hop]."""

    def __init__(self, cfg: EncodecConfig) -> None:
        super().__init__()
        width = cfg.num_filters * 2 ** len(cfg.upsampling_ratios)
        layers: list[nn.Module] = [
            PaddedConv1d(cfg, cfg.hidden_size, width, cfg.kernel_size),
            SkipLSTM(cfg, width),
        ]
        for ratio in cfg.upsampling_ratios:
            layers += [nn.ELU(), TrimmedConvTranspose1d(cfg, width, width // 2, ratio * 2, ratio)]
            width //= 2
            layers += [
                ResnetBlock(cfg, width, cfg.dilation_growth_rate**j)
                for j in range(cfg.num_residual_layers)
            ]
        layers += [nn.ELU(), PaddedConv1d(cfg, width, cfg.audio_channels, cfg.last_kernel_size)]
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class Codebook(nn.Module):
    def __init__(self, cfg: EncodecConfig) -> None:
        super().__init__()
        self.embed = nn.Parameter(
            torch.zeros(cfg.codebook_size, cfg.codebook_dim), requires_grad=False
        )

    def nearest(self, x: torch.Tensor) -> torch.Tensor:
        """x [M, dim] -> index of the nearest entry [M] (squared Euclidean distance)."""
        embed = self.embed.t()
        dist = -(x.pow(2).sum(1, keepdim=True) - 2 * x @ embed + embed.pow(2).sum(0, keepdim=True))
        return dist.max(dim=-1).indices


class QuantizerLayer(nn.Module):
    def __init__(self, cfg: EncodecConfig) -> None:
        super().__init__()
        self.codebook = Codebook(cfg)


class ResidualVectorQuantizer(nn.Module):
    """Each layer quantizes what the layers before it left over; decoding sums the entries."""

    def __init__(self, cfg: EncodecConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(QuantizerLayer(cfg) for _ in range(cfg.num_quantizers))

    def encode(self, latents: torch.Tensor, num_codebooks: int) -> torch.Tensor:
        """latents [B, dim, T] -> codes [B, K, T]."""
        b, _, t = latents.shape
        residual = latents.transpose(1, 2).reshape(b * t, -1)
        codes = []
        for layer in self.layers[:num_codebooks]:
            book = cast(QuantizerLayer, layer).codebook
            idx = book.nearest(residual)
            residual = residual - F.embedding(idx, book.embed)
            codes.append(idx.view(b, t))
        return torch.stack(codes, dim=1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, K, T] -> latents [B, dim, T]."""
        books = [cast(QuantizerLayer, layer).codebook for layer in self.layers]
        out = F.embedding(codes[:, 0], books[0].embed)
        for k in range(1, codes.shape[1]):
            out = out + F.embedding(codes[:, k], books[k].embed)
        return out.transpose(1, 2)


class EncodecModel(nn.Module):
    def __init__(self, cfg: EncodecConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = SEANetEncoder(cfg)
        self.decoder = SEANetDecoder(cfg)
        self.quantizer = ResidualVectorQuantizer(cfg)

    def encode(self, wav: torch.Tensor, num_codebooks: int | None = None) -> torch.Tensor:
        """Waveform [B, C, N] -> codes [B, K, ceil(N / hop)]."""
        k = num_codebooks or self.cfg.num_quantizers
        if not 1 <= k <= self.cfg.num_quantizers:
            raise ValueError(f"num_codebooks must be in 1..{self.cfg.num_quantizers}, got {k}")
        return self.quantizer.encode(self.encoder(wav), k)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, K, T] -> waveform [B, C, T * hop]."""
        return self.decoder(self.quantizer.decode(codes))
