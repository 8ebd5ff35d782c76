"""A running batch's memory, and the rows of one of its steps.

A running batch (`generation.scheduler`) keeps one decoder batch whose rows are independent
jobs at positions of their own. Its KV cache is a pool of fixed places, allocated once for
`places` jobs and the window: place j holds cache rows j (the job's conditional row, which
sees its text) and places + j (its unconditional row, if it is guided), and text row j (its text's
cross-attention keys and values). A job takes a free place when it joins and gives it back when
it leaves, and the next job writes over it: memory is set by the places and the window, never
by the number of jobs served. A row reads only the frames it wrote itself, so a place is reused
without clearing it.

A step's rows (`RowBatch`) are each job's first row, then the second rows of the guided jobs:
the rows with text come first, as the C++ step takes them. A joining job's prompt goes in
separately, a chunk at a time and a few layers at a time (`LayeredPrefill`), between steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import torch

from ..models.lm import CacheLayout, LayerCache, LMCache, MusicGenLM, self_kv_buffers

TEXT_WORDS = 32  # text tokens a place holds at first; a longer text grows the store once
RowRun = Callable[[torch.Tensor, LMCache], torch.Tensor]  # (tokens, cache) -> logits


@dataclass(frozen=True)
class RowGroup:
    """One job's rows in one step of a running batch."""

    place: int  # its place in the pool
    rows: int  # 1, or 2 for a guided job (its conditional row first)
    frames: int  # frames its rows hold already: where this step's first frame goes


@dataclass(frozen=True)
class RowBatch:
    """The rows of one step: each group's first row, in order, then the second rows of the
    guided groups, in order."""

    groups: tuple[RowGroup, ...]

    @property
    def size(self) -> int:
        return sum(g.rows for g in self.groups)

    @cached_property
    def rows_of(self) -> list[list[int]]:
        """Each group's rows in the batch, its conditional row first."""
        second = len(self.groups)
        rows = []
        for i, group in enumerate(self.groups):
            rows.append([i] if group.rows == 1 else [i, second])
            second += group.rows - 1
        return rows

    def slots(self, places: int) -> torch.Tensor:
        """Each row's cache row in a pool of `places` places (int64 [B]): the steps' order is
        the memory's where places are in order."""
        slots = [0] * self.size
        for group, rows in zip(self.groups, self.rows_of, strict=True):
            for k, row in enumerate(rows):
                slots[row] = group.place + k * places
        return torch.tensor(slots, dtype=torch.long)

    def positions(self) -> torch.Tensor:
        """Each row's frame, where it writes (int64 [B])."""
        positions = [0] * self.size
        for group, rows in zip(self.groups, self.rows_of, strict=True):
            for row in rows:
                positions[row] = group.frames
        return torch.tensor(positions, dtype=torch.long)


@dataclass
class KVPool:
    """The KV cache of a running batch: `places` places of two cache rows and a text row each,
    for `frames` frames (see the module docstring)."""

    lm: MusicGenLM
    places: int
    frames: int
    layout: CacheLayout = field(default_factory=CacheLayout)
    cache: LMCache = field(init=False)
    words: list[int] = field(init=False)  # each place's text words (0: none yet)
    free: list[int] = field(init=False)
    _views: dict[int, tuple[tuple[int, int], LMCache]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        if self.places < 1 or self.frames < 1:
            raise ValueError(f"a pool needs places and frames, got {self.places}, {self.frames}")
        p = next(self.lm.parameters())
        buffers, spare = self_kv_buffers(self.lm.cfg, 2 * self.places, self.frames, self.layout, p)
        layers = [
            LayerCache.of(keys, values, *self._text_store(TEXT_WORDS)) for keys, values in buffers
        ]
        self.cache = LMCache(layers=layers, cross_mask=None, cross_rows=self.places, spare=spare)
        self.words = [0] * self.places
        self.free = list(range(self.places))

    @property
    def text_capacity(self) -> int:
        return self.cache.layers[0].cross_k.shape[2]

    def take(self) -> int | None:
        """A free place (the lowest), or None when every place is taken."""
        if not self.free:
            return None
        place = min(self.free)
        self.free.remove(place)
        return place

    def give(self, place: int) -> None:
        """Give a place back; the next job to take it writes over what it holds."""
        if place in self.free or not 0 <= place < self.places:
            raise ValueError(f"place {place} is not taken")
        self.free.append(place)
        self.words[place] = 0
        self._views.pop(place, None)

    def set_text(self, place: int, cross: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """The place's text: each layer's cross-attention keys and values [1, H, S, hd] (as
        `MusicGenLM.text_keys` makes them for one text). A text longer than the store's words
        grows the store (once per longer text; the others' texts are kept)."""
        words = cross[0][0].shape[2]
        if words > self.text_capacity:
            self._grow_text(words)
        for layer, (keys, values) in zip(self.cache.layers, cross, strict=True):
            layer.cross_k[place, :, :words] = keys[0]
            layer.cross_v[place, :, :words] = values[0]
        self.words[place] = words
        self._views.pop(place, None)

    def view(self, group: RowGroup) -> LMCache:
        """The group's rows and text as a cache of their own (views of the pool's tensors), at
        `group.frames`: the model's own forward runs a job's rows on it."""
        key = (group.rows, self.words[group.place])
        held = self._views.get(group.place)
        if held is None or held[0] != key:
            rows = slice(group.place, group.place + group.rows * self.places, self.places)
            text = (slice(group.place, group.place + 1), slice(None), slice(0, key[1]))
            layers = [_layer_view(layer, rows, text) for layer in self.cache.layers]
            view = LMCache(layers=layers, cross_mask=None, cross_rows=1, spare=self.cache.spare)
            held = self._views[group.place] = (key, view)
        view = held[1]
        view.length = group.frames
        return view

    def _text_store(self, words: int) -> tuple[torch.Tensor, torch.Tensor]:
        cfg, p = self.lm.cfg, next(self.lm.parameters())
        shape = (self.places, cfg.num_heads, words, cfg.head_dim)
        dtype = self.layout.text_dtype(p.dtype)
        return (
            torch.zeros(shape, device=p.device, dtype=dtype),
            torch.zeros(shape, device=p.device, dtype=dtype),
        )

    def _grow_text(self, words: int) -> None:
        words = -(-words // 16) * 16  # a few sizes, not one per text
        for layer in self.cache.layers:
            keys, values = self._text_store(words)
            kept = layer.cross_k.shape[2]
            keys[:, :, :kept], values[:, :, :kept] = layer.cross_k, layer.cross_v
            layer.cross_k, layer.cross_v = keys, values
        self._views.clear()


def _layer_view(layer: LayerCache, rows: slice, text: tuple[slice, ...]) -> LayerCache:
    def part(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t[rows]

    return LayerCache(
        layer.self_k[rows], layer.self_v[rows], layer.cross_k[text], layer.cross_v[text],
        part(layer.self_k_scale), part(layer.self_v_scale),
    )  # fmt: skip


def eager_rows(run: RowRun, tokens: torch.Tensor, pool: KVPool, batch: RowBatch) -> torch.Tensor:
    """tokens [B, K, T] of `batch`'s rows -> each row's last frame's logits [B, K, V], each job's
    rows run by `run` on their own (`KVPool.view`): torch's products pick their kernels by the
    rows they multiply, so a job's rows are multiplied as they would be alone."""
    out: torch.Tensor | None = None
    for group, rows in zip(batch.groups, batch.rows_of, strict=True):
        index = torch.tensor(rows, device=tokens.device)
        logits = run(tokens.index_select(0, index), pool.view(group))[:, :, -1]
        if out is None:
            out = logits.new_empty(batch.size, *logits.shape[1:])
        out.index_copy_(0, index, logits)
    if out is None:
        raise ValueError("a step of a running batch needs rows")
    return out


class LayeredPrefill:
    """One chunk of a job's prompt (tokens [rows, K, T], T <= `step.PREFILL_CHUNK`) through the
    decoder in its place of the pool, a few layers at a time: `MusicGenLM.forward`'s stages on
    the chunk, in its order, so the numbers of the chunk a prefill alone feeds in one call
    (`EagerStep.__call__`), spread over step boundaries so that the running rows wait for it
    about as long as the caller allows."""

    def __init__(self, lm: MusicGenLM, pool: KVPool, group: RowGroup, tokens: torch.Tensor):
        self.lm, self.pool, self.group, self.tokens = lm, pool, group, tokens
        self.x: torch.Tensor | None = None  # the next layer's input [rows, T, D]
        self.layer = 0  # the next layer

    @property
    def frames(self) -> int:
        return self.tokens.shape[-1]

    def run(self, seconds: float | None = None) -> torch.Tensor | None:
        """Run layers until `seconds` have passed (at least one; None: to the end) -> the
        chunk's last frame's logits [rows, K, V] once its last layer ran, else None."""
        start = time.perf_counter()
        cache = self.pool.view(self.group)
        if self.x is None:
            self.x = self.lm.embed_frames(self.tokens, cache)
        while self.layer < len(self.lm.layers):
            self.x = self.lm.layers[self.layer](self.x, cache, cache.layers[self.layer])
            self.layer += 1
            if seconds is not None and time.perf_counter() - start >= seconds:
                break
        if self.layer < len(self.lm.layers):
            return None
        return self.lm.heads(self.x)[:, :, -1]
