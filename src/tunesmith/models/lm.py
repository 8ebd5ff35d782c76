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

from ..config import LMConfig
from ..engine.cpu_step import CpuStep
from ..engine.hugepages import move_to_huge_pages
from ..engine.int8 import Int8Linear
from ..engine.memory import mapped_zeros
from ..kernels.cpu import attention as cpu_attention
from ..kernels.cpu.fp32 import PackedLinear

# Projections of the text, run once per generation on many rows: not worth packing.
_ONCE_PER_CALL = ("encoder_attn.k_proj", "encoder_attn.v_proj")


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


def self_kv_buffers(
    layers: int, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, block: bool
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Zeroed self-attention keys and values of `shape` for each layer.

    With `block` (a decoder stepping in `cpu_step`, which reads the cache through raw
    pointers) they are one anonymous mapping on a CPU, viewed per layer (`memory`):
    its pages are taken as frames are written and given back when the generation ends,
    where heap blocks would stay resident afterwards, under the codec decode's own peak
    (~0.1-0.2 GB at 10 s). Otherwise one tensor each: views at offsets into one block make
    torch.compile recompile more."""
    if block and device.type == "cpu":
        whole = mapped_zeros((layers, 2, *shape), dtype)
        return [(whole[i, 0], whole[i, 1]) for i in range(layers)]
    return [
        (
            torch.zeros(shape, device=device, dtype=dtype),
            torch.zeros(shape, device=device, dtype=dtype),
        )
        for _ in range(layers)
    ]


def is_half_on_cpu(kv: torch.Tensor) -> bool:
    """A float16 KV cache on a CPU (the int8 decoder's): attended by `cpu_attention`."""
    return kv.dtype == torch.float16 and kv.device.type == "cpu"


def attend_causal(
    q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, start: int
) -> torch.Tensor:
    """Queries q [B, H, T, hd] for frames start..start+T-1 over the cache's keys and values
    [B, H, capacity, hd] up to their own frame (already written)."""
    t = q.shape[2]
    end = start + t
    k, v = keys[:, :, :end], values[:, :, :end]
    if is_half_on_cpu(k):
        if t == 1:
            return cpu_attention.attend_one(q, keys, values, end)
        k, v = k.float(), v.float()  # a prefill: torch's attention, in float32
    if t == 1:
        return F.scaled_dot_product_attention(q, k, v)  # one query sees all keys so far
    if start == 0:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    q_pos = torch.arange(start, end, device=q.device)[:, None]
    causal = torch.arange(end, device=q.device)[None, :] <= q_pos
    return F.scaled_dot_product_attention(q, k, v, attn_mask=causal)


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
    """One layer's keys and values: self-attention [B, H, T_max, hd], cross-attention [B, H, S, hd]."""

    self_k: torch.Tensor
    self_v: torch.Tensor
    cross_k: torch.Tensor
    cross_v: torch.Tensor


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
    graph: object | None = None  # a captured CUDA graph of one step on this cache
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
        self.qkv_proj: nn.Module | None = None  # set by fuse_qkv()

    def fuse_qkv(self) -> None:
        """One [3D, D] product instead of three per step (fewer kernel launches and reads);
        the separate projections are dropped. Self-attention only: cross-attention projects
        its keys and values once per call."""
        parts = [self.q_proj, self.k_proj, self.v_proj]
        if all(isinstance(p, Int8Linear) for p in parts):
            self.qkv_proj = Int8Linear.concat(cast(list[Int8Linear], parts))
        else:
            w = torch.cat([cast(nn.Linear, p).weight for p in parts])
            fused = nn.Linear(w.shape[1], w.shape[0], bias=False, device=w.device, dtype=w.dtype)
            fused.weight = nn.Parameter(w, requires_grad=False)
            self.qkv_proj = fused
        del self.q_proj, self.k_proj, self.v_proj

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
        self.final_layer_norm = LayerNorm(d, eps=eps)

    def forward(self, x: torch.Tensor, cache: LMCache, layer: LayerCache) -> torch.Tensor:
        """x: [B, T, D] for frames cache.length .. cache.length + T - 1."""
        start, t = cache.length, x.shape[1]
        end = start + t

        # Self-attention over everything written so far plus these T frames.
        attn = self.self_attn
        h = self.self_attn_layer_norm(x)
        q, k_new, v_new = attn.project_qkv(h)
        q = attn.split_heads(q)
        layer.self_k[:, :, start:end] = attn.split_heads(k_new)
        layer.self_v[:, :, start:end] = attn.split_heads(v_new)
        out = attend_causal(q, layer.self_k, layer.self_v, start)
        x = add_linear(x, attn.out_proj, attn.merge_heads(out))
        return self.feed_forward(self.cross_attend(x, cache, layer))

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
        attn = self.self_attn
        q, k_new, v_new = attn.project_qkv(self.self_attn_layer_norm(x))
        layer.self_k.index_copy_(2, position, attn.split_heads(k_new))
        layer.self_v.index_copy_(2, position, attn.split_heads(v_new))
        out = F.scaled_dot_product_attention(
            attn.split_heads(q), layer.self_k, layer.self_v, attn_mask=unseen
        )
        x = add_linear(x, attn.out_proj, attn.merge_heads(out))
        return self.feed_forward(self.cross_attend(x, cache, layer))

    def cross_attend(self, x: torch.Tensor, cache: LMCache, layer: LayerCache) -> torch.Tensor:
        """Cross-attention to the text, only for the rows that have text."""
        n = cache.cross_rows
        if n == 0:
            return x
        xattn = self.encoder_attn
        h = self.encoder_attn_layer_norm(x[:n])
        q = xattn.split_heads(xattn.q_proj(h))
        k, v, mask = layer.cross_k, layer.cross_v, cache.cross_mask
        if is_half_on_cpu(k) and q.shape[2] == 1:
            words = k.shape[2]
            flat = None if mask is None else mask.reshape(n, words).float()
            out = cpu_attention.attend_one(q, k, v, words, flat)
        else:
            if is_half_on_cpu(k):
                k, v = k.float(), v.float()
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        merged = xattn.merge_heads(out)
        if n == x.shape[0]:
            return add_linear(x, xattn.out_proj, merged)
        # x is this layer's own intermediate: add into its first rows, no concatenation.
        add_linear_(x[:n], xattn.out_proj, merged)
        return x

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.final_layer_norm(x)
        fc1 = self.fc1
        if isinstance(fc1, Int8Linear) and fc1.gelu:  # applied in the int8 kernel
            return add_linear(x, self.fc2, fc1(h))
        return add_linear(x, self.fc2, F.gelu(fc1(h)))


DecodeFn = Callable[["MusicGenLM", torch.Tensor, LMCache], torch.Tensor]
StaticStepFn = Callable[[torch.Tensor, torch.Tensor, LMCache], torch.Tensor]


class MusicGenLM(nn.Module):
    """Codebook transformer decoder with K embeddings and K output heads."""

    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        k, d = cfg.num_codebooks, cfg.hidden_size
        # vocab_size + 1 rows: the extra one is the special (BOS/pad) token.
        self.embed_tokens = nn.ModuleList(nn.Embedding(cfg.vocab_size + 1, d) for _ in range(k))
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_layers))
        self.layer_norm = LayerNorm(d, eps=cfg.layer_norm_eps)
        self.lm_heads = nn.ModuleList(nn.Linear(d, cfg.vocab_size, bias=False) for _ in range(k))
        self._compiled_decode: DecodeFn | None = None  # set by compile_steps()
        self.cuda_graphs = False  # replay one-frame CUDA steps as graphs (see cuda_graphs)
        self.compiled_static_step: StaticStepFn | None = None  # set by compile_static_step()
        self.kv_dtype: torch.dtype | None = None  # KV cache dtype, if not the weights' (fuse)
        self.cpu_step: CpuStep | None = None  # the whole one-frame CPU step in C++ (fuse)

    def fuse(self) -> MusicGenLM:
        """Fuse each self-attention's q, k, v projections, and move int8 layers on a CPU to
        the `cpu_int8` kernel (GELU applied in it, a float16 KV cache) and float32 ones to
        `cpu_fp32`'s, one-frame steps then running in `cpu_step` (inference speed; the same
        weights, repacked in place)."""
        for layer in self.layers:
            cast(DecoderLayer, layer).self_attn.fuse_qkv()
        # By name, not a list of modules: that list would keep every replaced layer's float32
        # weight alive until the end, two copies of the decoder at once.
        for name in [name for name, _ in self.named_modules()]:
            module = self.get_submodule(name)
            if isinstance(module, Int8Linear):
                # Packed int8 weights stream fast enough that float32 keys and values would be
                # a large share of each step's reads: keep the cache in float16 instead.
                if module.pack_for_cpu() and cpu_attention.available():
                    self.kv_dtype = torch.float16
                module.gelu = name.endswith(".fc1") and module.chunk is not None
            elif isinstance(module, nn.Linear) and not name.endswith(_ONCE_PER_CALL):
                packed = PackedLinear.from_linear(module)
                if packed is not None:
                    parent, _, attr = name.rpartition(".")
                    setattr(self.get_submodule(parent), attr, packed)
        streamed = [
            (module, "weight")
            for module in self.modules()
            if (isinstance(module, Int8Linear) and module.chunk is not None)
            or isinstance(module, PackedLinear)
        ]
        move_to_huge_pages(streamed)  # read every step: fewer TLB misses in 2 MiB pages
        self.cpu_step = CpuStep.for_decoder(self)  # after the move: it holds the weights
        return self

    def new_cache(
        self,
        batch: int,
        capacity: int,
        text: torch.Tensor,
        text_mask: torch.Tensor,
    ) -> LMCache:
        """Allocate the KV cache and project the text once.

        batch: rows of the decoder batch (conditional rows first); capacity: frames to hold.
        text: [N, S, D] projected text states of the N <= batch rows that see text; rows past N
        are unconditional. text_mask: [N, S], 1 for real tokens.
        """
        cfg = self.cfg
        p = next(self.parameters())
        kv_dtype = self.kv_dtype or p.dtype
        # One spare frame: the attended slice [:end] then never covers the whole buffer, so its
        # contiguity never changes and a compiled step needs no second graph for the last frame.
        # On a GPU the buffer is a multiple of 64 frames: attention over all of it (the CUDA
        # graph step) then takes its mask without padding it first.
        spare = 1 + (-(capacity + 1) % 64 if p.device.type == "cuda" else 0)
        shape = (batch, cfg.num_heads, capacity + spare, cfg.head_dim)
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
        layers = []
        block = self.cpu_step is not None
        buffers = self_kv_buffers(len(self.layers), shape, kv_dtype, p.device, block)
        for layer, (keys, values) in zip(self.layers, buffers, strict=True):
            xattn = cast(DecoderLayer, layer).encoder_attn
            layers.append(
                LayerCache(
                    self_k=keys,
                    self_v=values,
                    cross_k=xattn.split_heads(xattn.k_proj(text)).to(kv_dtype).contiguous(),
                    cross_v=xattn.split_heads(xattn.v_proj(text)).to(kv_dtype).contiguous(),
                )
            )
        return LMCache(layers=layers, cross_mask=cross_mask, cross_rows=text.shape[0], spare=spare)

    def compile_steps(self) -> MusicGenLM:
        """Run one-frame decoder steps through torch.compile from now on (opt-in; see
        `compiled_step`). Prefill and the first two steps stay eager."""
        from ..engine.compiled_step import compile_decode

        self._compiled_decode = compile_decode(MusicGenLM.decode)
        return self

    def forward(self, tokens: torch.Tensor, cache: LMCache) -> torch.Tensor:
        """tokens: [B, K, T] frames at positions cache.length.. -> logits [B, K, T, V] (float32).

        Advances cache.length by T.
        """
        if self.cuda_graphs and tokens.shape[-1] == 1 and tokens.is_cuda:
            from ..engine.cuda_graphs import graphed_step

            return graphed_step(self, tokens, cache)
        step = self.cpu_step
        if step is not None and tokens.shape[-1] == 1:
            keys = cache.layers[0].self_k
            if keys.dtype == step.kv_dtype and keys.device.type == "cpu":  # the step's cache
                return self.cpu_step_decode(tokens, cache)
        compiled = self._compiled_decode
        # torch.compile specializes integers 0 and 1: the steps at positions 0 and 1 would each
        # cost a compile of their own; from 2 on, one graph serves every position.
        if compiled is not None and tokens.shape[-1] == 1 and cache.length >= 2:
            return compiled(self, tokens, cache)
        return self.decode(tokens, cache)

    def prepare_static(self, cache: LMCache) -> None:
        """Give the cache what `static_step` reads besides it: the positional rows of the
        whole buffer (once per cache, not a dozen small kernels every step), and a text mask
        even where there is no padding (all zeros), so that a compiled step has one shape."""
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

    def compile_static_step(self) -> MusicGenLM:
        """Run `static_step` through torch.compile (inductor fuses the norms, residual adds
        and cache writes into fewer kernels; the CUDA graph then replays those). Dynamic
        shapes: one compile serves every batch size and window length."""
        self.compiled_static_step = torch.compile(self.static_step, fullgraph=True, dynamic=True)
        return self

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

    def cpu_step_decode(self, tokens: torch.Tensor, cache: LMCache) -> torch.Tensor:
        """One frame tokens [B, K, 1] through `cpu_step` (a decoder on a CPU) -> logits
        [B, K, 1, V]; the same result as `decode`, in one C++ call."""
        assert self.cpu_step is not None
        start = cache.length
        self._check_room(cache, start + 1)
        x = self.embed(tokens)[:, 0] + self.buffer_positions(cache)[start]
        logits = self.cpu_step(x, start, cache)
        cache.length = start + 1
        return logits[:, :, None]

    @staticmethod
    def _check_room(cache: LMCache, end: int) -> None:
        if end > cache.capacity:
            raise RuntimeError(f"KV cache holds {cache.capacity} frames; asked for {end}")

    def decode(self, tokens: torch.Tensor, cache: LMCache) -> torch.Tensor:
        """The eager forward (what `forward` runs unless steps are compiled)."""
        t = tokens.shape[-1]
        start = cache.length
        self._check_room(cache, start + t)
        x = self.embed(tokens)
        pos = sinusoidal_positions(
            torch.arange(start, start + t, device=tokens.device), x.shape[-1]
        )
        x = x + pos.to(x.dtype)
        for layer, layer_cache in zip(self.layers, cache.layers, strict=True):
            x = layer(x, cache, layer_cache)
        cache.length = start + t
        return self.heads(x)
