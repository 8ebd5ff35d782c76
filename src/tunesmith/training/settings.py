"""Every setting of a fine-tuning run, in one frozen dataclass with its defaults and checks.

The fields that shape the result (`RESUME_KEYS`) are written beside the run's state; a
`--resume` with other values is refused, naming each difference. The run's length (`--steps`,
`--epochs`) may change on resume: a larger one extends a finished run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidOptionError
from ..options import WINDOW_SECONDS

# The decoder's attention projections (self and cross) and its feed-forward layers.
DEFAULT_TARGETS: tuple[str, ...] = (
    *(f"self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj", "out_proj")),
    *(f"encoder_attn.{p}" for p in ("q_proj", "k_proj", "v_proj", "out_proj")),
    "fc1",
    "fc2",
)

TEXT_DROPOUT = 0.3  # audiocraft's classifier-free guidance training dropout for MusicGen
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class TrainSettings:
    model: str
    segment_seconds: float = 30.0
    val_share: float = 0.1
    full: bool = False  # train the whole decoder, not LoRA
    lora_rank: int = 16
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = DEFAULT_TARGETS
    batch_size: int = 4
    grad_accum: int = 1
    steps: int | None = None  # optimizer steps; None: from epochs
    epochs: float | None = None  # None with steps None: 10 epochs
    lr: float | None = None  # None: 1e-4 for LoRA, 1e-5 for the whole decoder
    warmup_steps: int | None = None  # None: 5% of the steps
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    text_dropout: float = TEXT_DROPOUT
    seed: int = 0
    save_every: int = 200
    precision: str = "auto"  # auto: bf16 autocast where matmuls run it natively, else fp32
    grad_checkpointing: bool = False
    default_caption: str | None = None
    text_encoder: str | None = None  # audiocraft checkpoints: where T5 comes from

    def __post_init__(self) -> None:
        checks = [
            (0 < self.segment_seconds <= WINDOW_SECONDS,
             f"--segment-seconds must be in (0, {WINDOW_SECONDS:g}], the model's window"),
            (self.segment_seconds >= 1, "--segment-seconds must be at least 1"),
            (0 <= self.val_share < 1, "--val-share must be in [0, 1)"),
            (self.lora_rank >= 1, "--lora-rank must be at least 1"),
            (self.lora_alpha > 0, "--lora-alpha must be above 0"),
            (0 <= self.lora_dropout < 1, "--lora-dropout must be in [0, 1)"),
            (bool(self.lora_targets), "--lora-targets names no layer"),
            (self.batch_size >= 1, "--batch-size must be at least 1"),
            (self.grad_accum >= 1, "--grad-accum must be at least 1"),
            (self.steps is None or self.steps >= 1, "--steps must be at least 1"),
            (self.epochs is None or self.epochs > 0, "--epochs must be above 0"),
            (self.lr is None or self.lr > 0, "--lr must be above 0"),
            (self.warmup_steps is None or self.warmup_steps >= 0, "--warmup-steps must be >= 0"),
            (self.max_grad_norm > 0, "--max-grad-norm must be above 0"),
            (0 <= self.text_dropout <= 1, "--text-dropout must be in [0, 1]"),
            (self.save_every >= 1, "--save-every must be at least 1"),
            (self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise InvalidOptionError(message)
        if self.steps is not None and self.epochs is not None:
            raise InvalidOptionError("give --steps or --epochs, not both")

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return 1e-5 if self.full else 1e-4

    def total_steps(self, batches_per_epoch: int) -> int:
        """Optimizer steps in the run: --steps, or --epochs (default 10) of the data."""
        if self.steps is not None:
            return self.steps
        per_epoch = max(1, batches_per_epoch // self.grad_accum)
        return max(1, round((self.epochs or 10.0) * per_epoch))

    def warmup(self, total: int) -> int:
        return self.warmup_steps if self.warmup_steps is not None else max(1, total // 20)

    def record(self) -> dict[str, Any]:
        """The settings a resumed run must share, and its length, as JSON."""
        values = dataclasses.asdict(self)
        values["lora_targets"] = list(self.lora_targets)
        return {key: values[key] for key in (*RESUME_KEYS, *LENGTH_KEYS)}


# The run's length: a resume may change it (a larger one extends the run).
LENGTH_KEYS = ("steps", "epochs")
# What a resumed run must share with the run it continues: all but its length, how often it
# saves, and whether it recomputes layers in the backward pass (memory, not results).
RESUME_KEYS = tuple(
    f.name
    for f in dataclasses.fields(TrainSettings)
    if f.name not in (*LENGTH_KEYS, "save_every", "grad_checkpointing")
)


def default(name: str) -> Any:
    """A field's default (what the CLI shows and uses): read from the dataclass, not repeated."""
    return next(f.default for f in dataclasses.fields(TrainSettings) if f.name == name)


def resumed(settings: TrainSettings, saved: dict[str, Any]) -> TrainSettings:
    """The settings a --resume runs with: the saved run's length where none is given."""
    if settings.steps is None and settings.epochs is None:
        return dataclasses.replace(settings, steps=saved.get("steps"), epochs=saved.get("epochs"))
    return settings


def differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    return [
        f"{key.replace('_', '-')} was {saved.get(key)!r}, now {now.get(key)!r}"
        for key in RESUME_KEYS
        if saved.get(key) != now.get(key)
    ]
