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
from .seanet_layers import (
    PaddedConv1d,
    ResnetBlock,
    SkipLSTM,
    TrimmedConvTranspose1d,
    run_time_major,
)


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
# On a CPU the chunks are also one row each (see SEANetDecoder.forward).
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
        # On a CPU, one row at a time: a chunk's activations then stay under glibc's 32 MB
        # ceiling for reusing freed heap memory, where 8 rows' (~140 MB each) were mapped
        # afresh and zeroed by the kernel for every layer. An 8-row decode of 10 s had ~20x
        # fewer page faults and took ~10% less time (the LSTM before stays batched).
        rows = 1 if x.device.type == "cpu" else b
        for r in range(0, b, rows):
            for start in range(0, frames, chunk):
                end = min(frames, start + chunk)
                # The true ends of the sequence get no halo, so they keep the real padding.
                left, right = max(0, start - self.halo), min(frames, end + self.halo)
                wav = self._tail(x[r : r + rows, :, left:right])  # [rows, C, (right-left) hop]
                keep = wav[..., (start - left) * hop : (end - left) * hop]
                out[r : r + rows, :, start * hop : end * hop] = keep
        return out

    def _tail(self, x: torch.Tensor) -> torch.Tensor:
        """The layers after the LSTM on frames [B, width, n] -> samples [B, C, n * hop]."""
        if x.device.type == "cpu" and not torch.is_grad_enabled():  # see seanet_layers
            y = x.transpose(1, 2).contiguous()
            for layer in self.layers[2:]:
                y = run_time_major(layer, y)
            return y.transpose(1, 2)
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
