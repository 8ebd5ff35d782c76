"""`tunesmith train DATA --model M --out DIR`: fine-tune on a folder of captioned audio."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..errors import InvalidOptionError
from .arguments import check_machine, check_model_argument, say, set_threads

if TYPE_CHECKING:  # the rest of training imports torch: not at the CLI's start
    from ..training.settings import TrainSettings


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `train` subcommand (its defaults read from TrainSettings)."""
    from ..options import DEFAULT_MODEL
    from ..training.settings import PRECISIONS
    from ..training.settings import default as d

    p = commands.add_parser(
        "train",
        help="fine-tune a model on your own audio (LoRA by default)",
        description=(
            "Fine-tune MODEL's decoder on DATA: a folder of audio files (wav, flac, mp3, ogg) "
            "each captioned by NAME.txt or an audiocraft-style NAME.json beside it, or a .csv "
            "/ .jsonl manifest with path and caption. Writes a LoRA adapter in PEFT's format "
            "to DIR/adapter (or, with --full, a whole checkpoint to DIR/model), the code cache, "
            "DIR/train.jsonl and DIR/loss.png. Ctrl-C saves; --resume continues."
        ),
    )
    p.add_argument("data", metavar="DATA", help="folder of captioned audio, or a .csv/.jsonl")
    p.add_argument(
        "--out", required=True, metavar="DIR", help="folder for everything the run writes"
    )
    p.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"hub id or folder (default {DEFAULT_MODEL})"
    )
    p.add_argument(
        "--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, ..."
    )
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--resume", action="store_true", help="continue the run saved in DIR")
    p.add_argument(
        "--text-encoder",
        default=None,
        metavar="T5",
        help="audiocraft checkpoints only: the T5 folder or hub id (default t5-base)",
    )
    data = p.add_argument_group("data")
    data.add_argument(
        "--segment-seconds",
        type=float,
        default=d("segment_seconds"),
        help=f"segment length (default {d('segment_seconds'):g}, at most the window)",
    )
    data.add_argument(
        "--val-share",
        type=float,
        default=d("val_share"),
        help=f"share of files held out for validation (default {d('val_share'):g})",
    )
    data.add_argument("--default-caption", default=None, help="caption for files that have none")
    data.add_argument(
        "--text-dropout",
        type=float,
        default=d("text_dropout"),
        help="share of examples trained without text, for guidance "
        f"(default {d('text_dropout'):g}, audiocraft's)",
    )
    lora = p.add_argument_group("what is trained")
    lora.add_argument("--full", action="store_true", help="train the whole decoder, not LoRA")
    for name, kind in (("lora_rank", int), ("lora_alpha", float), ("lora_dropout", float)):
        lora.add_argument(
            "--" + name.replace("_", "-"), type=kind, default=d(name),
            help=f"{name.replace('_', ' ').replace('lora', 'LoRA')} (default {d(name):g})",
        )  # fmt: skip
    lora.add_argument(
        "--lora-targets", default=None, metavar="NAMES",
        help="comma-separated decoder layers (default: self_attn and encoder_attn's q/k/v/out_proj, fc1, fc2)",
    )  # fmt: skip
    opt = p.add_argument_group("optimization")
    opt.add_argument(
        "--batch-size",
        type=int,
        default=d("batch_size"),
        help=f"segments per batch (default {d('batch_size')})",
    )
    opt.add_argument(
        "--grad-accum", type=int, default=d("grad_accum"),
        help=f"batches per optimizer step (default {d('grad_accum')})",
    )  # fmt: skip
    opt.add_argument("--steps", type=int, default=None, help="optimizer steps (default: 10 epochs)")
    opt.add_argument(
        "--epochs", type=float, default=None, help="passes over the data instead of --steps"
    )
    opt.add_argument(
        "--lr", type=float, default=None, help="peak learning rate (default 1e-4 LoRA, 1e-5 --full)"
    )
    opt.add_argument(
        "--warmup-steps", type=int, default=None, help="linear warm-up (default 5%% of the steps)"
    )
    opt.add_argument(
        "--weight-decay",
        type=float,
        default=d("weight_decay"),
        help=f"AdamW weight decay (default {d('weight_decay'):g})",
    )
    opt.add_argument(
        "--max-grad-norm",
        type=float,
        default=d("max_grad_norm"),
        help=f"gradient clipping (default {d('max_grad_norm'):g})",
    )
    opt.add_argument(
        "--seed",
        type=int,
        default=d("seed"),
        help=f"seed for the data order and dropout (default {d('seed')})",
    )
    opt.add_argument(
        "--save-every", type=int, default=d("save_every"),
        help=f"save (and validate) every N steps (default {d('save_every')})",
    )  # fmt: skip
    opt.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=d("precision"),
        help="auto (default): bfloat16 autocast where products run it natively (CUDA, CPUs with AMX or AVX512-BF16), else fp32",
    )
    opt.add_argument(
        "--grad-checkpointing",
        action="store_true",
        help="recompute each layer in the backward pass (less memory)",
    )
    p.set_defaults(run=run_train)


def settings_from(args: argparse.Namespace) -> TrainSettings:
    from ..training.settings import DEFAULT_TARGETS, TrainSettings

    targets = DEFAULT_TARGETS
    if args.lora_targets is not None:
        targets = tuple(t.strip() for t in args.lora_targets.split(",") if t.strip())
    if args.full and args.lora_targets is not None:
        raise InvalidOptionError("--lora-targets applies to LoRA; --full trains every layer")
    return TrainSettings(
        model=args.model, segment_seconds=args.segment_seconds, val_share=args.val_share,
        full=args.full, lora_rank=args.lora_rank, lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout, lora_targets=targets, batch_size=args.batch_size,
        grad_accum=args.grad_accum, steps=args.steps, epochs=args.epochs, lr=args.lr,
        warmup_steps=args.warmup_steps, weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm,
        text_dropout=args.text_dropout,
        seed=args.seed, save_every=args.save_every, precision=args.precision,
        grad_checkpointing=args.grad_checkpointing, default_caption=args.default_caption,
        text_encoder=args.text_encoder,
    )  # fmt: skip


def run_train(args: argparse.Namespace) -> int:
    check_machine(args)
    check_model_argument(args.model)
    settings = settings_from(args)
    from ..training.trainer import train

    set_threads(args)
    result = train(settings, args.data, args.out, device=args.device, resume=args.resume, say=say)
    say(
        f"loss {result.first_loss:.4f} at the first step, {result.last_loss:.4f} at step "
        f'{result.steps}; generate with: tunesmith generate "..." --model {args.model} '
        + (f"(or --model {result.output})" if settings.full else f"--adapter {result.output}")
    )
    return 0
