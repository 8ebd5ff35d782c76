"""The MusicGen language model: a pre-LN transformer decoder over K parallel codebook streams.

Each step reads one frame of K tokens (their embeddings are summed), attends causally to the
frames before it and, through cross-attention, to the text, and predicts K next tokens with
K separate heads. Module names follow the Hugging Face checkpoint (`decoder.model.decoder.*`).

The KV cache is preallocated for the whole window and written by position, so a decode step
allocates nothing that grows with time; cross-attention keys and values are computed once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config import LMConfig
from . import kv_int8

KVBuffers = list[tuple[torch.Tensor, torch.Tensor]]  # (keys, values) of each layer
KVAllocator = Callable[[int, tuple[int, ...], torch.dtype, torch.device], KVBuffers]


def sinusoidal_positions(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Positional table rows for `positions` ([T] long) -> [T, dim] float32, cos half first.

    Computed the way the checkpoints were trained (tensor2tensor's variant: the frequency
    exponent is divided by `half - 1`, not `half`).
    """
    half = dim // 2
    freqs = torch.exp(
        torch.arange(half, device=positions.device, dtype=torch.float32)
        * -(math.log(10000.0) / (half - 1))
    )
    angles = positions.to(torch.float32)[:, None] * freqs[None, :]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


def add_linear(x: torch.Tensor, linear: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """x + linear(h); on a GPU one kernel (addmm) instead of a product and an add."""
    if type(linear) is nn.Linear and linear.bias is None and x.is_cuda:
        weight = cast(torch.Tensor, linear.weight)
        return torch.addmm(x.flatten(0, -2), h.flatten(0, -2), weight.t()).view_as(x)
    return x + linear(h)


def add_linear_(x: torch.Tensor, linear: nn.Module, h: torch.Tensor) -> None:
    """x += linear(h) in place (x contiguous); on a GPU one kernel (addmm_)."""
    if type(linear) is nn.Linear and linear.bias is None and x.is_cuda:
        weight = cast(torch.Tensor, linear.weight)
        x.view(-1, x.shape[-1]).addmm_(h.flatten(0, -2), weight.t())
    else:
        x += linear(h)


def zeroed_kv_buffers(
    layers: int, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
) -> KVBuffers:
    """Zeroed self-attention keys and values of `shape` for each layer, one tensor each."""
    zeros = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(2 * layers)]
    return list(zip(zeros[::2], zeros[1::2], strict=True))


@dataclass(frozen=True)
class CacheLayout:
    """How a KV cache lies in memory. The engine that runs the steps chooses it (a float16
    cache for int8 CPU kernels, one mapping for a C++ step, a GPU buffer a multiple of 64
    frames for a graph's mask); the model only follows it."""

    dtype: torch.dtype | None = None  # self-attention keys and values; None: the weights'
    align: int = 1  # the buffer's frames (capacity + spare) are a multiple of this
    allocate: KVAllocator = zeroed_kv_buffers

    def text_dtype(self, weights: torch.dtype) -> torch.dtype:
        """The text's cross-attention keys and values: the cache's dtype, but float16 where
        that is int8 (`kv_int8`: its scales are per frame written, and the text is a few
        frames written once)."""
        dtype = self.dtype or weights
        return torch.float16 if dtype == torch.int8 else dtype


def as_attended(kv: torch.Tensor) -> torch.Tensor:
    """Keys or values as torch's attention reads them: a float16 cache on a CPU (the int8
    engine's text keys) in float32, where torch's half attention is slow."""
    return kv.float() if kv.dtype == torch.float16 and kv.device.type == "cpu" else kv


def attend_causal(
    q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, start: int
) -> torch.Tensor:
    """Queries q [B, H, T, hd] for frames start..start+T-1 over the cache's keys and values
    [B, H, capacity, hd] up to their own frame (already written)."""
    t = q.shape[2]
    end = start + t
    k, v = as_attended(keys[:, :, :end]), as_attended(values[:, :, :end])
    queries = q.to(k.dtype)
    if t == 1:  # one query sees all keys so far
        out = F.scaled_dot_product_attention(queries, k, v)
    elif start == 0:
        out = F.scaled_dot_product_attention(queries, k, v, is_causal=True)
    else:
        q_pos = torch.arange(start, end, device=q.device)[:, None]
        causal = torch.arange(end, device=q.device)[None, :] <= q_pos
        out = F.scaled_dot_product_attention(queries, k, v, attn_mask=causal)
    return out.to(q.dtype)


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the weights' dtype (fp16 overflows otherwise)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda:  # CUDA's kernel already accumulates half inputs in float32: no casts
            return super().forward(x)
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).to(x.dtype)


@dataclass
class LayerCache:
    """One layer's keys and values: self-attention [B, H, T_max, hd], cross-attention
    [B, H, S, hd]; an int8 self-attention cache (`kv_int8`) has scales [B, H, T_max] too."""

    self_k: torch.Tensor
    self_v: torch.Tensor
    cross_k: torch.Tensor
    cross_v: torch.Tensor
    self_k_scale: torch.Tensor | None = None
    self_v_scale: torch.Tensor | None = None

    @classmethod
    def of(
        cls, keys: torch.Tensor, values: torch.Tensor, cross_k: torch.Tensor, cross_v: torch.Tensor
    ) -> LayerCache:
        """A layer's cache around its buffers, with zeroed scales where they are int8."""
        scales = [
            torch.zeros(t.shape[:3], device=t.device) if t.dtype == torch.int8 else None
            for t in (keys, values)
        ]
        return cls(keys, values, cross_k, cross_v, scales[0], scales[1])

    def write(self, start: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Keys and values [B, H, t, hd] of frames start .. start + t - 1."""
        end = start + k.shape[2]
        if self.self_k_scale is None or self.self_v_scale is None:
            self.self_k[:, :, start:end] = k
            self.self_v[:, :, start:end] = v
            return
        for data, scales, x in (
            (self.self_k, self.self_k_scale, k),
            (self.self_v, self.self_v_scale, v),
        ):
            q, s = kv_int8.quantize(x)
            data[:, :, start:end], scales[:, :, start:end] = q, s

    def frames(self, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The self-attention keys and values of frames 0 .. end - 1, as attention reads them
        (an int8 cache's in float32)."""
        k, v = self.self_k[:, :, :end], self.self_v[:, :, :end]
        if self.self_k_scale is None or self.self_v_scale is None:
            return k, v
        return (
            kv_int8.dequantize(k, self.self_k_scale[:, :, :end]),
            kv_int8.dequantize(v, self.self_v_scale[:, :, :end]),
        )


@dataclass
class LMCache:
    """Decoder state for one batch: preallocated per-layer KV and the text cross-attention mask.

    `cross_rows` leading rows of the batch see text; the rest (the unconditional half of a
    classifier-free-guidance batch) have an all-zero text state, so their cross-attention
    output is exactly zero and is not computed.
    """

    layers: list[LayerCache]
    cross_mask: torch.Tensor | None  # [cross_rows, 1, 1, S]: True (or 0.0) where a token is real
    cross_rows: int
    length: int = 0  # frames already written
    spare: int = 0  # frames allocated past the capacity (see MusicGenLM.new_cache)
    step_state: object | None = None  # what the engine's step keeps with this cache (a graph)
    positions: torch.Tensor | None = None  # positional rows for the whole buffer (static_step)

    @property
    def capacity(self) -> int:
        return self.layers[0].self_k.shape[2] - self.spare


class Attention(nn.Module):
    """Multi-head attention without biases, used for both self- and cross-attention."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.out_proj = nn.Linear(dim, dim, bias=False)
        # q, k and v as one [3D, D] product, where the engine fuses them (q/k/v_proj then go).
        self.qkv_proj: nn.Module | None = None

    def project_qkv(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.qkv_proj is None:
            return self.q_proj(h), self.k_proj(h), self.v_proj(h)
        q, k, v = self.qkv_proj(h).chunk(3, dim=-1)
        return q, k, v

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        return x.view(b, t, self.num_heads, d // self.num_heads).transpose(1, 2)

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, h, t, hd = x.shape
        return x.transpose(1, 2).reshape(b, t, h * hd)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        d, eps = cfg.hidden_size, cfg.layer_norm_eps
        self.self_attn = Attention(d, cfg.num_heads)
        self.self_attn_layer_norm = LayerNorm(d, eps=eps)
        self.encoder_attn = Attention(d, cfg.num_heads)
        self.encoder_attn_layer_norm = LayerNorm(d, eps=eps)
        self.fc1 = nn.Linear(d, cfg.ffn_dim, bias=False)
        self.fc2 = nn.Linear(cfg.ffn_dim, d, bias=False)
        # An engine whose fc1 applies GELU itself (the int8 CPU kernel) makes this Identity.
        self.activation: nn.Module = nn.GELU()
        self.final_layer_norm = LayerNorm(d, eps=eps)

    def forward(self, x: torch.Tensor, cache: LMCache, layer: LayerCache) -> torch.Tensor:
        """x: [B, T, D] for frames cache.length .. cache.length + T - 1."""
        start, t = cache.length, x.shape[1]
        q, k, v = self.project(x)
        layer.write(start, k, v)
        # Self-attention over everything written so far plus these T frames.
        keys, values = layer.frames(start + t)
        return self.finish(x, attend_causal(q, keys, values, start), cache, layer)

    def whole_sequence(self, x: torch.Tensor, cache: LMCache, layer: LayerCache) -> torch.Tensor:
        """x: [B, T, D] for frames 0 .. T - 1 (teacher forcing): causal self-attention within
        x itself, nothing written to the cache."""
        q, k, v = self.project(x)
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.finish(x, attended, cache, layer)

    def static_step(
        self,
        x: torch.Tensor,
        position: torch.Tensor,
        unseen: torch.Tensor,
        cache: LMCache,
        layer: LayerCache,
    ) -> torch.Tensor:
        """One frame x [B, 1, D] at `position` (a 1-element long tensor, not a Python int):
        the same result as `forward`, with shapes that never change, so that a CUDA graph
        can replay it. Attends over the whole buffer; `unseen` [1, T_buffer] is the additive
        mask (-inf past `position`, 0 elsewhere)."""
        q, k, v = self.project(x)
        layer.self_k.index_copy_(2, position, k)
        layer.self_v.index_copy_(2, position, v)
        out = F.scaled_dot_product_attention(q, layer.self_k, layer.self_v, attn_mask=unseen)
        return self.finish(x, out, cache, layer)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Self-attention's normed queries, keys and values of x, split into heads."""
        attn = self.self_attn
        q, k, v = attn.project_qkv(self.self_attn_layer_norm(x))
        return attn.split_heads(q), attn.split_heads(k), attn.split_heads(v)

    def finish(
        self, x: torch.Tensor, attended: torch.Tensor, cache: LMCache, layer: LayerCache
    ) -> torch.Tensor:
        """The rest of the layer after self-attention's heads: out_proj and the residual,
        cross-attention, feed-forward."""
        x = add_linear(x, self.self_attn.out_proj, self.self_attn.merge_heads(attended))
        return self.feed_forward(self.cross_attend(x, cache, layer))

    def cross_attend(self, x: torch.Tensor, cache: LMCache, layer: LayerCache) -> torch.Tensor:
        """Cross-attention to the text, only for the rows that have text."""
        n = cache.cross_rows
        if n == 0:
            return x
        xattn = self.encoder_attn
        h = self.encoder_attn_layer_norm(x[:n])
        q = xattn.split_heads(xattn.q_proj(h))
        k, v, mask = as_attended(layer.cross_k), as_attended(layer.cross_v), cache.cross_mask
        if mask is not None and mask.is_floating_point():
            mask = mask.to(k.dtype)
        out = F.scaled_dot_product_attention(q.to(k.dtype), k, v, attn_mask=mask).to(x.dtype)
        merged = xattn.merge_heads(out)
        if n == x.shape[0]:
            return add_linear(x, xattn.out_proj, merged)
        # x is this layer's own intermediate: add into its first rows, no concatenation.
        add_linear_(x[:n], xattn.out_proj, merged)
        return x

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.final_layer_norm(x)
        return add_linear(x, self.fc2, self.activation(self.fc1(h)))


class MusicGenLM(nn.Module):
    """Codebook transformer decoder with K embeddings and K output heads.

    `forward` is the plain eager computation; how steps run fast (C++ on a CPU, compiled,
    CUDA graphs) is the engine's business (`tunesmith.engine`), which calls this module's
    `forward`, `static_step`, `embed` and `heads` and never changes what they compute.
    """

    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        k, d = cfg.num_codebooks, cfg.hidden_size
        # vocab_size + 1 rows: the extra one is the special (BOS/pad) token.
        self.embed_tokens = nn.ModuleList(nn.Embedding(cfg.vocab_size + 1, d) for _ in range(k))
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_layers))
        self.layer_norm = LayerNorm(d, eps=cfg.layer_norm_eps)
        self.lm_heads = nn.ModuleList(nn.Linear(d, cfg.vocab_size, bias=False) for _ in range(k))

    def new_cache(
        self,
        batch: int,
        capacity: int,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        layout: CacheLayout | None = None,
    ) -> LMCache:
        """Allocate the KV cache and project the text once.

        batch: rows of the decoder batch (conditional rows first); capacity: frames to hold.
        text: [N, S, D] projected text states of the N <= batch rows that see text; rows past N
        are unconditional. text_mask: [N, S], 1 for real tokens.
        """
        p = next(self.parameters())
        layout = layout or CacheLayout()
        buffers, spare = self_kv_buffers(self.cfg, batch, capacity, layout, p)
        cross, cross_mask = self.text_keys(text, text_mask, layout.text_dtype(p.dtype))
        layers = [
            LayerCache.of(keys, values, ck, cv)
            for (keys, values), (ck, cv) in zip(buffers, cross, strict=True)
        ]
        return LMCache(layers=layers, cross_mask=cross_mask, cross_rows=text.shape[0], spare=spare)

    def text_keys(
        self, text: torch.Tensor, text_mask: torch.Tensor, kv_dtype: torch.dtype
    ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor | None]:
        """Each layer's cross-attention keys and values of the text, and the text mask as
        attention takes it (None where no token is padding)."""
        p = next(self.parameters())
        text = text.to(p.dtype)
        mask = text_mask.bool()
        # A row with no text token at all is unconditional: its keys and values are zero, so
        # attending uniformly gives exactly the zero a fully masked row gives in the reference.
        mask = mask | ~mask.any(dim=1, keepdim=True)
        # No padding (one prompt, or prompts of one length): no mask to expand at every step.
        # Otherwise additive (0 / -inf) in the model's dtype, which attention takes as it is.
        cross_mask = None
        if not bool(mask.all()):
            cross_mask = torch.zeros(mask.shape, device=p.device, dtype=p.dtype)
            cross_mask = cross_mask.masked_fill(~mask, float("-inf"))[:, None, None, :]
        cross = []
        for layer in self.layers:
            xattn = cast(DecoderLayer, layer).encoder_attn
            keys = xattn.split_heads(xattn.k_proj(text)).to(kv_dtype).contiguous()
            values = xattn.split_heads(xattn.v_proj(text)).to(kv_dtype).contiguous()
            cross.append((keys, values))
        return cross, cross_mask

    def teacher_forced(
        self,
        tokens: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        checkpoint_layers: bool = False,
    ) -> torch.Tensor:
        """Training's forward: whole sequences tokens [B, K, L] from position 0, each frame
        attending to those before it -> logits [B, K, L, V] float32. The same layers as a
        decode step, without a KV cache (nothing to keep between calls; autograd keeps what
        the backward pass needs). checkpoint_layers: keep only each layer's input and compute
        the rest again in the backward pass (less memory, about a third more time)."""
        p = next(self.parameters())
        cross, cross_mask = self.text_keys(text, text_mask, p.dtype)
        empty = p.new_empty(0)
        cache = LMCache(
            layers=[LayerCache(empty, empty, ck, cv) for ck, cv in cross],
            cross_mask=cross_mask,
            cross_rows=text.shape[0],
        )
        x = self.embed(tokens)
        positions = torch.arange(tokens.shape[-1], device=tokens.device)
        x = x + sinusoidal_positions(positions, x.shape[-1]).to(x.dtype)
        for layer, layer_cache in zip(self.layers, cache.layers, strict=True):
            run = cast(DecoderLayer, layer).whole_sequence
            if checkpoint_layers and torch.is_grad_enabled():
                x = checkpoint(run, x, cache, layer_cache, use_reentrant=False)
            else:
                x = run(x, cache, layer_cache)
        return self.heads(x)

    def forward(self, tokens: torch.Tensor, cache: LMCache) -> torch.Tensor:
        """tokens: [B, K, T] frames at positions cache.length.. -> logits [B, K, T, V] (float32).

        Advances cache.length by T. (An engine may run its stages a few layers at a time.)
        """
        x = self.embed_frames(tokens, cache)
        for layer, layer_cache in zip(self.layers, cache.layers, strict=True):
            x = layer(x, cache, layer_cache)
        cache.length += tokens.shape[-1]
        return self.heads(x)

    def embed_frames(self, tokens: torch.Tensor, cache: LMCache) -> torch.Tensor:
        """tokens [B, K, T] at positions cache.length.. (within its capacity) -> the first
        layer's input [B, T, D]: the codebooks' embeddings plus each frame's positional row."""
        start, t = cache.length, tokens.shape[-1]
        check_room(cache, start + t)
        x = self.embed(tokens)
        frames = torch.arange(start, start + t, device=tokens.device)
        return x + sinusoidal_positions(frames, x.shape[-1]).to(x.dtype)

    def prepare_static(self, cache: LMCache) -> None:
        """Give the cache what `static_step` reads besides it: the positional rows of the
        whole buffer, and a text mask even where there is no padding (all zeros), so that a
        compiled step has one shape."""
        p = next(self.parameters())
        self.buffer_positions(cache)
        if cache.cross_mask is None and cache.cross_rows:
            words = cache.layers[0].cross_k.shape[2]
            cache.cross_mask = torch.zeros(
                cache.cross_rows, 1, 1, words, device=p.device, dtype=p.dtype
            )

    def buffer_positions(self, cache: LMCache) -> torch.Tensor:
        """The positional rows of the cache's whole buffer, computed once per cache (not a
        dozen small kernels every step)."""
        if cache.positions is None:
            p = next(self.parameters())
            frames = torch.arange(cache.layers[0].self_k.shape[2], device=p.device)
            cache.positions = sinusoidal_positions(frames, self.cfg.hidden_size).to(p.dtype)
        return cache.positions

    def static_step(
        self, tokens: torch.Tensor, position: torch.Tensor, cache: LMCache
    ) -> torch.Tensor:
        """One frame tokens [B, K, 1] at `position` (1-element long tensor) -> logits
        [B, K, 1, V], with fixed shapes (see DecoderLayer.static_step). Does not advance
        cache.length: the caller (a CUDA graph replay) does. Needs `prepare_static(cache)`."""
        if cache.positions is None:
            raise RuntimeError("static_step needs prepare_static(cache) first")
        x = self.embed(tokens) + cache.positions.index_select(0, position)
        buffer = cache.layers[0].self_k.shape[2]
        later = torch.arange(buffer, device=x.device)[None, :] > position
        unseen = torch.zeros(later.shape, device=x.device, dtype=x.dtype).masked_fill(
            later, float("-inf")
        )  # one mask for all layers
        for layer, layer_cache in zip(self.layers, cache.layers, strict=True):
            x = cast(DecoderLayer, layer).static_step(x, position, unseen, cache, layer_cache)
        return self.heads(x)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, K, T] -> the sum of the K codebook embeddings [B, T, D]."""
        x = sum(self.embed_tokens[i](tokens[:, i]) for i in range(tokens.shape[1]))
        assert isinstance(x, torch.Tensor)
        return x

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        """Final norm and the K output heads: [B, T, D] -> logits [B, K, T, V] float32."""
        h = self.layer_norm(x)
        return torch.stack([head(h) for head in self.lm_heads], dim=1).float()


def self_kv_buffers(
    cfg: LMConfig, batch: int, capacity: int, layout: CacheLayout, like: torch.Tensor
) -> tuple[KVBuffers, int]:
    """Each layer's zeroed self-attention keys and values for `capacity` frames, as `layout`
    says, and the spare frames past the capacity.

    At least one spare frame: the attended slice [:end] then never covers the whole buffer, so
    its contiguity never changes and a compiled step needs no second graph for the last one."""
    spare = 1 + (-(capacity + 1) % layout.align)
    shape = (batch, cfg.num_heads, capacity + spare, cfg.head_dim)
    buffers = layout.allocate(cfg.num_layers, shape, layout.dtype or like.dtype, like.device)
    return buffers, spare


def check_room(cache: LMCache, end: int) -> None:
    """Refuse a step past the cache's capacity (the caller's bug, not the user's)."""
    if end > cache.capacity:
        raise RuntimeError(f"KV cache holds {cache.capacity} frames; asked for {end}")
