"""MusicGen-melody: the same codebook decoder without cross-attention; the conditioning is a
prefix the decoder reads before the first audio frame.

    prefix = [ chroma (chroma_length frames, projected) | text states (projected, x mask) ]
    decoder input = prefix + start frame + frames ...      (one causal sequence, positions 0..)

The chroma is one-hot over 12 pitch classes per frame of a reference melody, tiled or cut to
`chroma_length` (30 s). Without a melody it is the "null" chroma: every frame on class 0.
Classifier-free guidance's unconditional rows get the null chroma and an all-zero text part
of the same length. The prefix is not masked: padded text positions are zero vectors that
still take attention (as in audiocraft and transformers).

`MelodyLM` keeps `MusicGenLM`'s interface (`new_cache(batch, capacity, text, text_mask)`,
`forward(tokens, cache)`), so the decode loop runs it unchanged: `new_cache` runs the prefix
through the layers once and leaves `cache.length` at the prefix length.
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import nn

from ..config import LMConfig, MelodyConfig, MusicGenConfig
from .encodec import EncodecModel
from .lm import (
    CacheLayout,
    DecoderLayer,
    LayerCache,
    LMCache,
    MusicGenLM,
    self_kv_buffers,
    sinusoidal_positions,
)
from .network import MusicGenModel
from .t5 import T5Encoder


class MelodyLM(MusicGenLM):
    """Codebook decoder with a conditioning prefix instead of cross-attention."""

    def __init__(self, cfg: LMConfig, melody: MelodyConfig) -> None:
        super().__init__(cfg)
        for layer in self.layers:
            # No cross-attention in this layout; DecoderLayer skips it when a cache has no
            # cross rows, so the modules can go.
            del cast(DecoderLayer, layer).encoder_attn
            del cast(DecoderLayer, layer).encoder_attn_layer_norm
        self.melody = melody
        self.chroma_proj = nn.Linear(melody.num_chroma, cfg.hidden_size)

    def chroma_prefix(self, chroma: torch.Tensor | None, batch: int) -> torch.Tensor:
        """Chroma [B, T, num_chroma] (None: the null chroma) -> [B, chroma_length, D], the
        frames tiled when short and cut when long."""
        p = self.chroma_proj.weight
        length = self.melody.chroma_length
        if chroma is None:
            null = torch.zeros(1, 1, self.melody.num_chroma, device=p.device, dtype=p.dtype)
            null[..., 0] = 1
            return self.chroma_proj(null).expand(batch, length, -1)
        states = self.chroma_proj(chroma.to(p.device, p.dtype))
        if states.shape[1] < length:
            states = states.repeat(1, math.ceil(length / states.shape[1]), 1)
        return states[:, :length]

    def new_cache(
        self,
        batch: int,
        capacity: int,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        layout: CacheLayout | None = None,
    ) -> LMCache:
        """Allocate the KV cache for prefix + `capacity` frames and run the prefix through.

        text: [N, P, D] prefixes of the N <= batch conditional rows (see
        MusicGenMelodyModel.encode_text); rows past N are unconditional (null chroma, zero
        text). text_mask is not used: the prefix is never masked.
        """
        cfg = self.cfg
        p = next(self.parameters())
        n, length, d = text.shape
        prefix = text.to(p.dtype)
        if batch > n:
            chroma = self.chroma_prefix(None, batch - n)
            empty = prefix.new_zeros(batch - n, length - chroma.shape[1], d)
            prefix = torch.cat([prefix, torch.cat([chroma, empty], dim=1)])
        layout = layout or CacheLayout()
        text_dtype = layout.text_dtype(p.dtype)
        buffers, spare = self_kv_buffers(cfg, batch, length + capacity, layout, p)
        none = torch.zeros(batch, cfg.num_heads, 0, cfg.head_dim, device=p.device, dtype=text_dtype)
        layers = [LayerCache.of(keys, values, none, none) for keys, values in buffers]
        cache = LMCache(
            layers=layers,
            cross_mask=torch.ones(0, 1, 1, 0, dtype=torch.bool, device=p.device),
            cross_rows=0,
            spare=spare,
        )
        x = prefix + sinusoidal_positions(torch.arange(length, device=p.device), d).to(p.dtype)
        for layer, layer_cache in zip(self.layers, cache.layers, strict=True):
            x = layer(x, cache, layer_cache)
        cache.length = length
        return cache


class MusicGenMelodyModel(MusicGenModel):
    """T5, text projection, the melody decoder (which holds the chroma projection), EnCodec."""

    def __init__(self, cfg: MusicGenConfig) -> None:
        nn.Module.__init__(self)
        if cfg.melody is None:
            raise ValueError("MusicGenMelodyModel needs a config with a melody section")
        self.cfg = cfg
        self.text_encoder = T5Encoder(cfg.text_encoder)
        self.enc_to_dec_proj = (
            nn.Linear(cfg.text_encoder.d_model, cfg.decoder.hidden_size)
            if cfg.has_projection
            else None
        )
        self.decoder: MelodyLM = MelodyLM(cfg.decoder, cfg.melody)
        self.audio_encoder = EncodecModel(cfg.audio_encoder)

    def encode_text(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        chroma: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token ids [B, S] (and chroma [B, T, 12], default the null chroma) -> the decoder
        prefix [B, chroma_length + S, D]: chroma frames, then text states zeroed at pads."""
        text = super().encode_text(input_ids, attention_mask)
        chroma_states = self.decoder.chroma_prefix(chroma, input_ids.shape[0])
        return torch.cat([chroma_states.to(text.dtype), text], dim=1)
