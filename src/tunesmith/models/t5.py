"""T5 encoder (t5-base in MusicGen): turns the text prompt into states for cross-attention.

T5 specifics: RMSNorm without bias (computed in float32), no 1/sqrt(d) scaling in attention,
one learned relative-position bias table (in block 0) shared by every block, ReLU FFN.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import T5Config


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.float().pow(2).mean(-1, keepdim=True)
        return (self.weight * (x.float() * torch.rsqrt(variance + self.eps))).to(x.dtype)


class SelfAttention(nn.Module):
    def __init__(self, cfg: T5Config) -> None:
        super().__init__()
        self.num_heads, self.d_kv = cfg.num_heads, cfg.d_kv
        self.q = nn.Linear(cfg.d_model, cfg.inner_dim, bias=False)
        self.k = nn.Linear(cfg.d_model, cfg.inner_dim, bias=False)
        self.v = nn.Linear(cfg.d_model, cfg.inner_dim, bias=False)
        self.o = nn.Linear(cfg.inner_dim, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x [B, S, D]; bias [B, H, S, S] = position bias + padding mask (additive)."""
        b, s, _ = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, s, self.num_heads, self.d_kv).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            heads(self.q(x)), heads(self.k(x)), heads(self.v(x)), attn_mask=bias, scale=1.0
        )
        return self.o(out.transpose(1, 2).reshape(b, s, -1))


class FeedForward(nn.Module):
    def __init__(self, cfg: T5Config) -> None:
        super().__init__()
        self.wi = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.wo = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.wo(F.relu(self.wi(x)))


class Block(nn.Module):
    def __init__(self, cfg: T5Config) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.layer_norm_epsilon)
        self.attn = SelfAttention(cfg)
        self.ffn_norm = RMSNorm(cfg.d_model, cfg.layer_norm_epsilon)
        self.ffn = FeedForward(cfg)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), bias)
        return x + self.ffn(self.ffn_norm(x))


def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> torch.Tensor:
    """[S, S] bucket ids for bidirectional relative positions (key - query), as T5 defines them:
    half the buckets per direction, exact up to num_buckets/4, then logarithmic to max_distance."""
    pos = torch.arange(length)
    rel = pos[None, :] - pos[:, None]
    half = num_buckets // 2
    buckets = (rel > 0).long() * half
    rel = rel.abs()
    exact = half // 2
    # Clamp to 1 before the log: those entries use the exact branch anyway.
    log_part = torch.log(rel.clamp(min=1).float() / exact) / math.log(max_distance / exact)
    large = (exact + (log_part * (half - exact)).long()).clamp(max=half - 1)
    return buckets + torch.where(rel < exact, rel, large)


class T5Encoder(nn.Module):
    """Token ids -> final-normed hidden states."""

    def __init__(self, cfg: T5Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.relative_attention_bias = nn.Embedding(
            cfg.relative_attention_num_buckets, cfg.num_heads
        )
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.final_norm = RMSNorm(cfg.d_model, cfg.layer_norm_epsilon)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask: [B, S] -> [B, S, D]."""
        x = self.embed_tokens(input_ids)
        s = input_ids.shape[1]
        buckets = relative_position_buckets(
            s, self.cfg.relative_attention_num_buckets, self.cfg.relative_attention_max_distance
        ).to(input_ids.device)
        bias = self.relative_attention_bias(buckets).permute(2, 0, 1)[None]  # [1, H, S, S]
        padding = (1.0 - attention_mask[:, None, None, :].to(bias.dtype)) * torch.finfo(
            bias.dtype
        ).min
        bias = bias + padding  # [B, H, S, S]
        for block in self.blocks:
            x = block(x, bias)
        return self.final_norm(x)
