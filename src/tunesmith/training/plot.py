"""DIR/loss.png: training loss per step (and its running mean) with the validation losses."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def plot_losses(log: Sequence[dict[str, Any]], path: Path) -> bool:
    """Draw the log's losses into `path`; False (nothing written) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    train = [(r["step"], r["loss"]) for r in log if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in log if "val_loss" in r]
    if not train:
        return False
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    steps, losses = zip(*train, strict=True)
    ax.plot(steps, losses, lw=0.8, alpha=0.5, label="training")
    window = max(1, len(losses) // 20)
    if window > 1:
        mean = [
            sum(losses[max(0, i - window + 1) : i + 1])
            / len(losses[max(0, i - window + 1) : i + 1])
            for i in range(len(losses))
        ]
        ax.plot(steps, mean, lw=1.5, label=f"training (mean of {window})")
    if val:
        vs, vl = zip(*val, strict=True)
        ax.plot(vs, vl, "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return True
