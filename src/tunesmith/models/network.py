"""The composite network: T5 text encoder, projection, codebook decoder, EnCodec codec.

Attribute names are the checkpoint's top-level prefixes (`text_encoder`, `enc_to_dec_proj`,
`decoder`, `audio_encoder`) so that the weight map in `checkpoint_keys` stays short.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import MusicGenConfig
from .encodec import EncodecModel
from .lm import MusicGenLM
from .t5 import T5Encoder


class MusicGenModel(nn.Module):
    def __init__(self, cfg: MusicGenConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.text_encoder = T5Encoder(cfg.text_encoder)
        self.enc_to_dec_proj: nn.Linear | None = (
            nn.Linear(cfg.text_encoder.d_model, cfg.decoder.hidden_size)
            if cfg.has_projection
            else None
        )
        self.decoder = MusicGenLM(cfg.decoder)
        self.audio_encoder = EncodecModel(cfg.audio_encoder)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token ids [B, S] -> decoder-width text states [B, S, D], zero at padded positions."""
        states = self.text_encoder(input_ids, attention_mask)
        if self.enc_to_dec_proj is not None:
            proj = self.enc_to_dec_proj
            states = proj(states.to(proj.weight.dtype))
        return states * attention_mask[..., None].to(states.dtype)
