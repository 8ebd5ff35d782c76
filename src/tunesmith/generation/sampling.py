"""From logits to tokens: classifier-free guidance, temperature, top-k, top-p, multinomial.

Pure functions. The order is transformers' (CFG, temperature, top-k, top-p, softmax, draw),
so that the same logits and the same random draws give the same tokens. On a CPU with our
kernels the top-k threshold and the draw run there (`kernels.cpu.ops`), with torch's results
and torch's use of the generator: torch spends ~0.5 ms a step on them, mostly drawing an
exponential variate (a logarithm) for each of the 2048 x K values of which top-k kept 250.
"""

from __future__ import annotations

import torch

from ..engine.step import Draw
from ..kernels.cpu import build
from ..kernels.cpu.ops import Kernels

# Below this temperature logits are shifted before the division (see `sample`); above it the
# plain division, as transformers computes it, so that the same draws give the same tokens.
TINY_TEMPERATURE = 1e-4


def cpu_kernels(logits: torch.Tensor) -> Kernels | None:
    """Our CPU kernels where they take these logits (float32, on a CPU that has them)."""
    if logits.device.type != "cpu" or logits.dtype != torch.float32:
        return None
    return build.kernels()


def step_draw(
    *, top_k: int, top_p: float, temperature: float, generator: torch.Generator | None
) -> Draw | None:
    """The draw a step may run itself (`Step.drawn`) for these settings: `sample`'s result
    for them is torch's temperature, top-k, softmax and multinomial, nothing else (no top-p,
    no greedy argmax, no tiny temperature)."""
    if top_k == 1 or temperature < TINY_TEMPERATURE or 0.0 < top_p < 1.0:
        return None
    return Draw(temperature, top_k, generator)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of the last dim (ties with the k-th kept too); -inf elsewhere."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kernels = cpu_kernels(logits)
    if kernels is not None:
        return kernels.top_k_filter(logits, k)
    # The k-th largest is the smallest of the top k: no need to sort them (~2x faster on CPU).
    kth = torch.topk(logits, k, dim=-1, sorted=False).values.amin(dim=-1, keepdim=True)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of top tokens whose probability sum reaches p.

    Works like transformers' TopPLogitsWarper: sort ascending, drop tokens whose cumulative
    probability is <= 1 - p, always keep the most likely one.
    """
    if p <= 0.0 or p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=False)
    cumulative = softmax(sorted_logits).cumsum(dim=-1)
    drop_sorted = cumulative <= (1 - p)
    drop_sorted[..., -1:] = False
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def softmax(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim. On a CPU one row at a time: torch splits even 4 rows of
    logits over its threads, and a parallel region beside a busy core waits for the thread that
    lost it (2.9 ms a step, 1000x the work). Each row's values are the same either way."""
    if logits.device.type != "cpu" or logits.dim() < 2:
        return logits.softmax(dim=-1)
    rows = logits.reshape(-1, logits.shape[-1])
    return torch.stack([row.softmax(dim=-1) for row in rows]).view(logits.shape)


def sample(
    logits: torch.Tensor,
    *,
    top_k: int,
    top_p: float,
    temperature: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw one token per row: logits [..., V] (float32) -> tokens [...] long.

    top_k == 1 is greedy (argmax), with no random draw.
    """
    if top_k == 1:
        return logits.argmax(dim=-1)
    kernels = cpu_kernels(logits)
    if kernels is not None and generator is not None and generator.device.type != "cpu":
        kernels = None
    draw = step_draw(top_k=top_k, top_p=top_p, temperature=temperature, generator=generator)
    if kernels is not None and draw is not None:  # what a step's own draw would do
        flat = logits.reshape(-1, logits.shape[-1])
        return kernels.sample_rows(flat, temperature, top_k, generator).view(logits.shape[:-1])
    if temperature < TINY_TEMPERATURE:
        # logits / 1e-45 overflows to inf (and softmax to NaN); less the row's largest first,
        # every logit but the largest goes to -inf: the same distribution, computed safely.
        logits = (logits - logits.amax(dim=-1, keepdim=True)) / temperature
    else:
        logits = logits / temperature
    logits = top_k_filter(logits, top_k)
    logits = top_p_filter(logits, top_p)
    probs = softmax(logits)
    flat = probs.reshape(-1, probs.shape[-1])
    if kernels is not None:
        drawn = kernels.multinomial_one(flat, generator)
    else:
        drawn = torch.multinomial(flat, 1, generator=generator)
    return drawn.view(probs.shape[:-1])
