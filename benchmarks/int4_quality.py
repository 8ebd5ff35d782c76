"""Would any 4-bit weight format pass the int8 quality guard's bar for int4 (teacher-forced
logits within 6% relative error of float32, at musicgen-small sizes)? And what would 8-bit
inputs cost the int8 format?

    python benchmarks/int4_quality.py [--folder CHECKPOINT]

Each format is simulated exactly (weights quantized and dequantized to float32, every
decoder projection and head, the codec untouched), so the figure is the format's own error,
before any kernel: a kernel can only match it. The int8 row is our shipped format (per-row
max-abs / 127), the reference for the bar. Same prompts, tokens and weights for all rows.

The last rows keep the int8 weights and round each product's inputs to 8 bits (a scale a row,
or a block of inputs), where the kernels round them to 15 bits a row: 8-bit inputs would take
one `vpdpbusd` a row per 64 weight bytes instead of two, half the products' instructions.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

BAR = 0.06  # the guard for int4
INT8_BAR = 0.03  # the int8 guard (tests/engine/test_int8_full_size.py)
Format = Callable[[torch.Tensor], torch.Tensor]


def int8_rows(w: torch.Tensor) -> torch.Tensor:
    scale = w.abs().amax(1, keepdim=True).clamp(min=1e-12) / 127
    return (w / scale).round().clamp(-127, 127) * scale


def int4_groups(group: int, asymmetric: bool = False, search: bool = False) -> Format:
    """Group-wise 4-bit: symmetric [-8, 7] x max-abs / 7 (with `search`, the clipping of the
    max from 1.0 down to 0.75 that gives each group the least squared error), or asymmetric
    0..15 with a zero point (min/max)."""

    def quantize(w: torch.Tensor) -> torch.Tensor:
        n, k = w.shape
        g = w.view(n, k // group, group)
        if asymmetric:
            lo, hi = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
            scale = ((hi - lo) / 15).clamp(min=1e-12)
            zero = (-lo / scale).round()
            return (((g / scale).round() + zero).clamp(0, 15) - zero).mul(scale).view(n, k)
        best, error = None, None
        for clip in (1.0, 0.95, 0.9, 0.85, 0.8, 0.75) if search else (1.0,):
            scale = (g.abs().amax(-1, keepdim=True) * clip / 7).clamp(min=1e-12)
            q = (g / scale).round().clamp(-8, 7) * scale
            e = (q - g).pow(2).sum(-1, keepdim=True)
            if best is None or error is None:
                best, error = q, e
            else:
                best, error = torch.where(e < error, q, best), torch.minimum(e, error)
        assert best is not None
        return best.view(n, k)

    return quantize


def inputs_rounded(bits: int, block: int | None) -> Callable[..., torch.Tensor]:
    """A forward pre-hook rounding a product's input to `bits` bits, max-abs scaled per row
    (`block` None) or per `block` inputs of a row."""
    top = 2 ** (bits - 1) - 1

    def hook(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x = args[0]
        width = block or x.shape[-1]
        g = x.reshape(-1, x.shape[-1] // width, width)
        scale = g.abs().amax(-1, keepdim=True).clamp(min=1e-12) / top
        return ((g / scale).round().clamp(-top, top) * scale).reshape(x.shape)

    return hook


# int8 weights with 8-bit inputs: the inputs a scale covers (None: a row).
INPUTS: dict[str, int | None] = {
    "int8, 8-bit inputs a row": None,
    "int8, 8-bit inputs in blocks of 128": 128,
    "int8, 8-bit inputs in blocks of 32": 32,
}

FORMATS: dict[str, Format] = {
    "int8, per row (shipped)": int8_rows,
    "int4, groups of 32": int4_groups(32),
    "int4, groups of 64": int4_groups(64),
    "int4, groups of 128": int4_groups(128),
    "int4, groups of 32, searched clipping": int4_groups(32, search=True),
    "int4, groups of 128, searched clipping": int4_groups(128, search=True),
    "int4, groups of 32, asymmetric (zero point)": int4_groups(32, asymmetric=True),
    "int4, groups of 16, asymmetric (zero point)": int4_groups(16, asymmetric=True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", help="a musicgen-small-sized checkpoint (default: build one)")
    args = parser.parse_args()
    from tunesmith import MusicGen
    from tunesmith.testing.checkpoints import build_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.folder) if args.folder else build_checkpoint(Path(tmp), "small")
        model = MusicGen.from_pretrained(folder, device="cpu", engine=False)
    torch.manual_seed(0)
    text = model.condition(["dreamy synth pads over a slow beat", "fast jazz drums"])
    tokens = torch.randint(0, 2048, (2, 4, 40))
    lm = model.model.decoder
    linears = {
        name: module
        for name, module in lm.named_modules()
        if isinstance(module, torch.nn.Linear) and module.bias is None
    }
    original = {name: m.weight.detach().clone() for name, m in linears.items()}
    with torch.inference_mode():
        want = lm(tokens, lm.new_cache(2, 40, text.states, text.mask))

    def logits_error() -> float:
        """The decoder's teacher-forced logits now, as relative error against float32's."""
        with torch.inference_mode():
            got = lm(tokens, lm.new_cache(2, 40, text.states, text.mask))
        return float((got - want).norm() / want.norm())

    print(f"{len(linears)} decoder projections and heads; guard for int4: < {BAR:.0%}\n")
    print("| format | bits a weight | teacher-forced logits, relative error | passes 6% |")
    print("|---|---|---|---|")
    for name, quantize in FORMATS.items():
        with torch.no_grad():
            for key, module in linears.items():
                module.weight.copy_(quantize(original[key]))
        error = logits_error()
        bits = "8 + a scale a row" if name.startswith("int8") else "4 + a scale a group"
        print(f"| {name} | {bits} | {error:.1%} | {'yes' if error < BAR else 'no'} |")
    with torch.no_grad():
        for key, module in linears.items():
            module.weight.copy_(int8_rows(original[key]))
    for name, block in INPUTS.items():
        hooks = [m.register_forward_pre_hook(inputs_rounded(8, block)) for m in linears.values()]
        error = logits_error()
        for hook in hooks:
            hook.remove()
        int8_verdict = "yes" if error < INT8_BAR else "no"
        verdict = f"{'yes' if error < BAR else 'no'}; int8's {INT8_BAR:.0%}: {int8_verdict}"
        print(f"| {name} | 8 + a scale a row | {error:.2%} | {verdict} |")


if __name__ == "__main__":
    main()
