"""T5 encoder (t5-base in MusicGen): turns the text prompt into states for cross-attention.

T5 specifics: RMSNorm without bias (computed in float32), no 1/sqrt(d) scaling in attention,
one learned relative-position bias table (in block 0) shared by every block, ReLU FFN, no biases.
Inference only: no dropout, no cache (the encoder runs once per prompt).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import T5Config


class RMSNorm(nn.Module):
    """T5's layer norm: scale by the root mean square, no mean subtraction, no bias."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[..., D] -> [..., D], statistics in float32 whatever the input dtype."""
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight * normed).to(x.dtype)


class SelfAttention(nn.Module):
    """Multi-head self-attention with an additive bias and no score scaling."""

    def __init__(self, cfg: T5Config) -> None:
        super().__init__()
        self.num_heads, self.d_kv = cfg.num_heads, cfg.d_kv
        self.q = nn.Linear(cfg.d_model, cfg.inner_dim, bias=False)
        self.k = nn.Linear(cfg.d_model, cfg.inner_dim, bias=False)
        self.v = nn.Linear(cfg.d_model, cfg.inner_dim, bias=False)
        self.o = nn.Linear(cfg.inner_dim, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x [B, S, D]; bias [B, H, S, S] = position bias + padding mask -> [B, S, D]."""
        b, s, _ = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, s, self.num_heads, self.d_kv).transpose(1, 2)  # [B, H, S, d_kv]

        # T5 folds the 1/sqrt(d) factor into its initialisation, so the trained weights
        # expect raw dot products: scale=1.
        out = F.scaled_dot_product_attention(
            heads(self.q(x)), heads(self.k(x)), heads(self.v(x)), attn_mask=bias, scale=1.0
        )
        return self.o(out.transpose(1, 2).reshape(b, s, -1))


class FeedForward(nn.Module):
    """ReLU MLP without biases (t5-base; T5 v1.1's gated GELU is not used by MusicGen)."""

    def __init__(self, cfg: T5Config) -> None:
        super().__init__()
        self.wi = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.wo = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, S, D] -> [B, S, D]."""
        return self.wo(F.relu(self.wi(x)))


class Block(nn.Module):
    """Pre-norm encoder block: x + attn(norm(x)), then x + ffn(norm(x))."""

    def __init__(self, cfg: T5Config) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.layer_norm_epsilon)
        self.attn = SelfAttention(cfg)
        self.ffn_norm = RMSNorm(cfg.d_model, cfg.layer_norm_epsilon)
        self.ffn = FeedForward(cfg)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x [B, S, D], bias [B, H, S, S] -> [B, S, D]."""
        x = x + self.attn(self.attn_norm(x), bias)
        return x + self.ffn(self.ffn_norm(x))


def relative_position_buckets(
    length: int, num_buckets: int, max_distance: int, device: torch.device | None = None
) -> torch.Tensor:
    """[S, S] bucket ids of the bidirectional relative positions (key - query), as T5 defines
    them: half the buckets for each direction; within a half, distances below a quarter of
    num_buckets get a bucket each, longer ones share logarithmically wider buckets, and every
    distance from max_distance on falls in the last bucket."""
    pos = torch.arange(length, device=device)
    rel = pos[None, :] - pos[:, None]  # [query, key]
    half = num_buckets // 2
    direction = (rel > 0).long() * half  # keys after the query use the upper half
    dist = rel.abs()
    exact = half // 2
    # Clamp to 1 before the log: distances that small take the exact branch anyway.
    log_ratio = torch.log(dist.clamp(min=1).float() / exact) / math.log(max_distance / exact)
    # The float -> long cast truncates toward zero, which is what the trained tables assume.
    far = (exact + (log_ratio * (half - exact)).long()).clamp(max=half - 1)
    return direction + torch.where(dist < exact, dist, far)


class T5Encoder(nn.Module):
    """Token ids -> final-normed hidden states (the T5 encoder stack of MusicGen)."""

    def __init__(self, cfg: T5Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        # Only block 0 of the checkpoint has a bias table; every block reuses it.
        self.relative_attention_bias = nn.Embedding(
            cfg.relative_attention_num_buckets, cfg.num_heads
        )
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.final_norm = RMSNorm(cfg.d_model, cfg.layer_norm_epsilon)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids [B, S] long, attention_mask [B, S] (1 = token, 0 = padding) -> [B, S, D].

        States at padded positions are computed but meaningless; callers mask them.
        """
        x = self.embed_tokens(input_ids)
        buckets = relative_position_buckets(
            input_ids.shape[1],
            self.cfg.relative_attention_num_buckets,
            self.cfg.relative_attention_max_distance,
            device=input_ids.device,
        )
        bias = self.relative_attention_bias(buckets).permute(2, 0, 1)[None]  # [1, H, S, S]
        # A large finite negative (not -inf) for padded keys, as transformers does: a row
        # whose keys are all padding then stays finite instead of turning into NaN.
        neg = torch.finfo(bias.dtype).min
        keep = attention_mask[:, None, None, :].to(bias.dtype)  # [B, 1, 1, S]
        bias = bias + (1.0 - keep) * neg  # [B, H, S, S]
        for block in self.blocks:
            x = block(x, bias)
        return self.final_norm(x)
