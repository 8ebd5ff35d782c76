"""`tunesmith train`: fine-tune a checkpoint's decoder on a folder of captioned audio.

Everything that can be wrong with the input is found before the long work: the output
folder, the data set and its captions, the model, a --resume's settings. Then the audio is
encoded once into the code cache, and the decoder trained (LoRA, or the whole of it) with
AdamW, a linear warm-up then a cosine decay, and gradient clipping. T5 and EnCodec stay
frozen. State is saved every --save-every steps and on Ctrl-C; --resume continues from it
with the same data order, and a larger --steps (or --epochs) extends the run: the warm-up
stays the run's, and the cosine decay stretches to end at the new last step.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..checkpoints.adapters import AdapterSettings
from ..checkpoints.loading import read_config, resolve_checkpoint
from ..engine.devices import has_fast_bf16, resolve_device
from ..errors import TrainingDataError
from ..musicgen import MusicGen
from .batches import EpochOrder, TextStates, make_batch
from .codes import Segment, encode_examples
from .data import find_examples, split
from .export import check_exportable, export_full
from .lora import add_lora, export_adapter, store_frozen_linears, targeted
from .objective import codebook_loss
from .plot import plot_losses
from .run_files import RunFiles, prepare
from .settings import TrainSettings, differences, resumed

Say = Callable[[str], None]


@dataclass(frozen=True)
class TrainResult:
    steps: int
    first_loss: float
    last_loss: float
    val_loss: float | None
    output: Path  # the adapter folder, or the whole checkpoint with --full
    files: RunFiles


def train(
    settings: TrainSettings,
    data: str | Path,
    out: str | Path,
    device: str = "auto",
    resume: bool = False,
    progress: bool = True,
    say: Say = print,
) -> TrainResult:
    """Run (or continue) one fine-tuning run; what it wrote, and its losses."""
    files = prepare(out)
    examples = find_examples(data, settings.default_caption)
    settings = _check_resume(files, settings, resume)
    source = resolve_checkpoint(settings.model)
    config = read_config(source, settings.text_encoder)
    if config.melody is not None:
        raise TrainingDataError(
            f"{settings.model} is a melody checkpoint; fine-tuning one would need each "
            "segment's chroma, which tunesmith train does not compute: use a text-only model"
        )
    if settings.full:
        check_exportable(source)
    dev = resolve_device(device)
    model = MusicGen.from_pretrained(
        settings.model, device=dev, dtype=torch.float32, text_encoder=settings.text_encoder,
        engine=False,
    )  # fmt: skip
    if not settings.full:
        targeted(model.model.decoder, settings.lora_targets)  # a bad name: before encoding
    train_set, val_set = split(examples, settings.val_share)
    segments, report = encode_examples(
        model, train_set, files.codes, settings.segment_seconds, progress
    )
    val_segments, val_report = (
        encode_examples(model, val_set, files.codes, settings.segment_seconds, progress)
        if val_set
        else ([], None)
    )
    for line in report.lines():
        say(f"training data: {line}")
    if val_report is not None:
        say(f"validation data: {val_report.lines()[0]}")
    if not segments:
        raise TrainingDataError(
            f"no usable segment in {data}: every file was unreadable, silent or under a second"
        )
    files.settings.write_text(json.dumps(settings.record(), indent=2) + "\n")
    return Trainer(model, settings, files, segments, val_segments, source, dev).run(
        resume, progress, say
    )


class Trainer:
    def __init__(
        self,
        model: MusicGen,
        settings: TrainSettings,
        files: RunFiles,
        segments: list[Segment],
        val_segments: list[Segment],
        source: Path,
        device: torch.device,
    ) -> None:
        self.model, self.settings, self.files = model, settings, files
        self.segments, self.val_segments, self.source = segments, val_segments, source
        self.device = device
        self.lm = model.model.decoder
        model.model.requires_grad_(False)
        if settings.full:
            self.lm.requires_grad_(True)
        else:  # A's random start from the run's seed: one seed, one result
            with torch.random.fork_rng(devices=_rng_devices(device)):
                torch.manual_seed(settings.seed)
                add_lora(
                    self.lm, settings.lora_targets, settings.lora_rank,
                    settings.lora_alpha, settings.lora_dropout,
                )  # fmt: skip
        self.bf16 = settings.precision == "bf16" or (
            settings.precision == "auto" and has_fast_bf16(device)
        )
        if self.bf16:  # the frozen weights once in bfloat16, not cast again every step
            store_frozen_linears(self.lm, torch.bfloat16)
        self.params = {n: p for n, p in self.lm.named_parameters() if p.requires_grad}
        batches = math.ceil(len(segments) / settings.batch_size)
        self.total = settings.total_steps(batches)
        self.optimizer = torch.optim.AdamW(
            self.params.values(), lr=settings.learning_rate, weight_decay=settings.weight_decay
        )
        self.warmup = settings.warmup(self.total)  # a resumed run keeps its own (`_load_state`)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: _schedule(step, self.warmup, self.total)
        )
        self.order = EpochOrder(len(segments), settings.batch_size, settings.seed)
        self.texts = TextStates(model)
        self.step = 0
        self.special = model.config.decoder.vocab_size

    # --- the loop ---------------------------------------------------------------------------

    def run(self, resume: bool, progress: bool, say: Say) -> TrainResult:
        from tqdm import tqdm

        if resume:
            planned = self._load_state()
            say(f"resumed at step {self.step} of {self.total}")
            if self.step == self.total:
                say("the run is finished: a larger --steps (or --epochs) extends it")
            elif planned not in (None, self.total):
                say(f"the run now ends at step {self.total}, not {planned}")
        trainable = sum(p.numel() for p in self.params.values())
        say(
            f"training {'the whole decoder' if self.settings.full else 'LoRA'}: "
            f"{trainable:,} parameters, {self.total} steps on {self.device}"
            f" ({'bfloat16 autocast' if self.bf16 else 'float32'})"
        )
        bar = tqdm(total=self.total, initial=self.step, desc="training", unit="step",
                   disable=not progress, dynamic_ncols=True)  # fmt: skip
        losses: list[float] = [r["loss"] for r in self.files.read_log() if "loss" in r]
        val_loss = None
        at = (self.order.epoch, self.order.position)
        start = time.perf_counter()
        try:
            while self.step < self.total:
                at = (self.order.epoch, self.order.position)  # where an interrupted step began
                began = time.perf_counter()
                loss, tokens = self._optimizer_step()
                seconds = time.perf_counter() - began
                self.step += 1
                losses.append(loss)
                self.files.log_line({
                    "step": self.step, "epoch": round(self.order.progress, 4), "loss": loss,
                    "lr": self.scheduler.get_last_lr()[0], "tokens": tokens,
                    "tokens_per_s": round(tokens / seconds, 1),
                    "elapsed_s": round(time.perf_counter() - start, 3),
                })  # fmt: skip
                bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens / seconds:.0f}")
                bar.update(1)
                if self.step % self.settings.save_every == 0 or self.step == self.total:
                    val_loss = self._validate()
                    self._save()
        except KeyboardInterrupt:
            bar.close()
            # The step in progress is dropped whole: its batches are read again on --resume.
            self.order.epoch, self.order.position = at
            self.optimizer.zero_grad(set_to_none=True)
            self._save()
            say(
                f"interrupted: saved step {self.step} in {self.files.root}; "
                "run again with --resume to continue"
            )
            raise
        bar.close()
        output = self.files.model if self.settings.full else self.files.adapter
        say(f"wrote {output}" + (f" (validation loss {val_loss:.4f})" if val_loss else ""))
        return TrainResult(
            steps=self.step, first_loss=losses[0] if losses else float("nan"),
            last_loss=losses[-1] if losses else float("nan"), val_loss=val_loss,
            output=output, files=self.files,
        )  # fmt: skip

    def _optimizer_step(self) -> tuple[float, int]:
        """One optimizer step over --grad-accum batches: (mean loss, real codes predicted)."""
        s = self.settings
        self.lm.train()
        total_loss, tokens = 0.0, 0
        # Each step's random draws (text and LoRA dropout) come from its own seed: a resumed
        # run repeats them exactly, and the caller's random state is left as it was.
        with torch.random.fork_rng(devices=_rng_devices(self.device)):
            torch.manual_seed(s.seed * 1_000_003 + self.step)
            for _ in range(s.grad_accum):
                batch, text = make_batch(
                    self.segments, self.order.next_batch(), self.special,
                    self.model.audio_channels, self.texts, s.text_dropout,
                )  # fmt: skip
                batch = batch.to(self.device)
                with self._autocast():
                    logits = self.lm.teacher_forced(
                        batch.inputs, text.states, text.mask,
                        checkpoint_layers=s.grad_checkpointing,
                    )  # fmt: skip
                    loss = codebook_loss(logits, batch)
                (loss / s.grad_accum).backward()
                total_loss += float(loss.detach()) / s.grad_accum
                tokens += batch.tokens
        torch.nn.utils.clip_grad_norm_(self.params.values(), s.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total_loss, tokens

    def _validate(self) -> float | None:
        if not self.val_segments:
            return None
        self.lm.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for begin in range(0, len(self.val_segments), self.settings.batch_size):
                indices = range(
                    begin, min(begin + self.settings.batch_size, len(self.val_segments))
                )
                batch, text = make_batch(
                    self.val_segments, list(indices), self.special,
                    self.model.audio_channels, self.texts, text_dropout=0.0,
                )  # fmt: skip
                batch = batch.to(self.device)
                with self._autocast():
                    logits = self.lm.teacher_forced(batch.inputs, text.states, text.mask)
                total += float(codebook_loss(logits, batch)) * batch.tokens
                count += batch.tokens
        loss = total / max(1, count)
        self.files.log_line({"step": self.step, "val_loss": loss})
        return loss

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # --- state ------------------------------------------------------------------------------

    def _save(self) -> None:
        """The state --resume needs, then what the run is for (adapter or checkpoint), then
        the loss plot; each file replaced whole, so an interruption loses nothing written."""
        state = {
            "step": self.step,
            "order": (self.order.epoch, self.order.position),
            "params": {n: p.detach().cpu() for n, p in self.params.items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "total": self.total,
            "warmup": self.warmup,
        }
        tmp = self.files.state.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.files.state)
        s = self.settings
        if s.full:
            export_full(self.source, self.lm, self.files.model)
        else:
            export_adapter(
                self.lm, self.files.adapter,
                AdapterSettings(s.lora_rank, s.lora_alpha, s.lora_dropout, s.model),
            )  # fmt: skip
        plot_losses(self.files.read_log(), self.files.plot)

    def _load_state(self) -> int | None:
        """Continue from the saved state; the run's length as it was saved (None: not saved)."""
        state = torch.load(self.files.state, map_location=self.device, weights_only=True)
        step = int(state["step"])
        if step > self.total:
            raise TrainingDataError(
                f"--resume: the run is at step {step}, past the {self.total} steps asked for: "
                f"give --steps {step} or more (more extends the run), or leave --steps and "
                "--epochs out to finish it as planned"
            )
        with torch.no_grad():
            for name, value in state["params"].items():
                self.params[name].copy_(value)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.order.epoch, self.order.position = state["order"]
        self.step = step
        self.warmup = int(state.get("warmup", self.warmup))
        # The next step's rate from the schedule of the run's length now (a longer run's is
        # above the finished run's last rate, 0); the same rate when the length is unchanged.
        for group, base, factor in zip(
            self.optimizer.param_groups,
            self.scheduler.base_lrs,
            self.scheduler.lr_lambdas,
            strict=True,
        ):
            group["lr"] = base * factor(self.scheduler.last_epoch)
        # Log lines past the saved step were never saved: drop them, the rerun writes them.
        kept = [r for r in self.files.read_log() if r["step"] <= self.step]
        self.files.log.write_text("".join(json.dumps(r) + "\n" for r in kept))
        return state.get("total")


def _check_resume(files: RunFiles, settings: TrainSettings, resume: bool) -> TrainSettings:
    """The settings to run with: a resumed run's must mean what the saved run's did (its
    length aside, which may grow)."""
    if not resume:
        if files.state.is_file():
            raise TrainingDataError(
                f"{files.root} already holds a run (state/last.pt): add --resume to continue "
                "it, or choose another --out"
            )
        return settings
    if not files.state.is_file() or not files.settings.is_file():
        raise TrainingDataError(f"--resume: {files.root} holds no saved run to continue")
    saved = json.loads(files.settings.read_text())
    settings = resumed(settings, saved)
    changed = differences(saved, settings.record())
    if changed:
        raise TrainingDataError(
            "--resume with other settings than the saved run's: "
            + "; ".join(changed)
            + ": give the saved values (only --steps or --epochs may change: a larger one "
            "extends the run), or start a new run with another --out"
        )
    return settings


def _schedule(step: int, warmup: int, total: int) -> float:
    """The learning rate's factor: linear warm-up, then a cosine down to zero."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _rng_devices(device: torch.device) -> list[int]:
    return [device.index or 0] if device.type == "cuda" else []
