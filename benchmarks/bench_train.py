"""Fine-tuning speed: tunesmith's LoRA training step against transformers + PEFT, side by side.

    python benchmarks/bench_train.py                      # musicgen-small sizes, random weights
    python benchmarks/bench_train.py --folder /tmp/ts-small --seconds 5 --batch 2 --steps 3

Both train the same LoRA (rank 16, alpha 16, dropout 0.05 on the decoder's self- and
cross-attention projections and fc1/fc2) with AdamW on the same batch of codes (random codes
of `--seconds` per row; speed does not depend on their values) and the same captions, each
step a forward pass, the loss, a backward pass and an optimizer step:

- tunesmith as `tunesmith train` runs it: `teacher_forced` + `codebook_loss`, the captions'
  frozen T5 states computed once;
- transformers + PEFT as a training script runs it (musicgen-dreamboothing's way):
  `PeftModel(MusicgenForConditionalGeneration)(input_ids, attention_mask,
  decoder_input_ids, labels)`, T5 frozen.

Each side runs in a process of its own (so one's memory does not hide in the other's peak),
alternating `--rounds` times. Printed per side: training tokens per second (real codes
predicted per second, the median over steps after a warm-up step), and peak memory while
training (resident set on a CPU, sampled every 5 ms; allocated memory on CUDA).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

TARGETS = [
    f"{block}.{proj}"
    for block in ("self_attn", "encoder_attn")
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj")
] + ["fc1", "fc2"]
CAPTIONS = ["warm lofi beat with soft piano", "fast techno with heavy bass and bright synths"]


class PeakRss:
    """The process's resident set, sampled on a thread; the highest seen since `reset`."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss())

    def reset(self) -> None:
        self.peak = rss()


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def batch_codes(batch: int, frames: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2048, (batch, 4, frames), generator=g)


def run_ours(folder: str, device: str, codes: torch.Tensor, steps: int, bf16: bool) -> dict:
    from tunesmith import MusicGen
    from tunesmith.training.batches import TextStates
    from tunesmith.training.lora import add_lora, store_frozen_linears
    from tunesmith.training.objective import codebook_loss, delayed_batch

    dev = torch.device(device)
    model = MusicGen.from_pretrained(folder, device=dev, dtype=torch.float32, engine=False)
    model.model.requires_grad_(False)
    lm = model.model.decoder
    add_lora(lm, TARGETS, rank=16, alpha=16, dropout=0.05)
    if bf16:  # as `tunesmith train` does: frozen weights cast once, not at every call
        store_frozen_linears(lm, torch.bfloat16)
    lm.train()
    params = [p for p in lm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    texts = TextStates(model)
    captions = [CAPTIONS[i % 2] for i in range(codes.shape[0])]
    batch = delayed_batch(list(codes), 2048).to(dev)

    def step() -> None:
        text = texts(captions, [False] * len(captions))
        with _autocast(dev, bf16):
            loss = codebook_loss(lm.teacher_forced(batch.inputs, text.states, text.mask), batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return _time(step, steps, batch.tokens, dev)


def run_theirs(folder: str, device: str, codes: torch.Tensor, steps: int, bf16: bool) -> dict:
    import peft
    from transformers import AutoTokenizer, MusicgenForConditionalGeneration

    from tunesmith.training.objective import delayed_batch

    dev = torch.device(device)
    model = MusicgenForConditionalGeneration.from_pretrained(folder).to(dev)
    model.freeze_audio_encoder()
    model.freeze_text_encoder()
    config = peft.LoraConfig(r=16, lora_alpha=16, lora_dropout=0.05, target_modules=TARGETS)
    model = peft.get_peft_model(model, config)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    captions = [CAPTIONS[i % 2] for i in range(codes.shape[0])]
    text = tokenizer(captions, padding=True, return_tensors="pt").to(dev)
    batch = delayed_batch(list(codes), 2048).to(dev)
    labels = batch.targets.transpose(1, 2)  # special (2048) where no code: ignored

    def step() -> None:
        with _autocast(dev, bf16):
            out = model(
                input_ids=text.input_ids, attention_mask=text.attention_mask,
                decoder_input_ids=batch.inputs, labels=labels,
            )  # fmt: skip
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return _time(step, steps, batch.tokens, dev)


def _autocast(dev: torch.device, bf16: bool):
    import contextlib

    if bf16:
        return torch.autocast(dev.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _time(step, steps: int, tokens: int, dev: torch.device) -> dict:
    watcher = PeakRss()
    step()  # warm-up: allocator, optimizer state
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    watcher.reset()
    times = []
    for _ in range(steps):
        began = time.perf_counter()
        step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - began)
    peak = torch.cuda.max_memory_allocated() if dev.type == "cuda" else watcher.peak
    return {"tokens_per_s": tokens / statistics.median(times), "peak_bytes": peak,
            "step_s": statistics.median(times)}  # fmt: skip


def child(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    codes = batch_codes(args.batch, round(args.seconds * 50))
    run = run_ours if args.side == "ours" else run_theirs
    print(json.dumps(run(args.folder, args.device, codes, args.steps, args.precision == "bf16")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", default=None, help="musicgen-small-sized checkpoint folder")
    parser.add_argument("--size", default="small", choices=("tiny", "small"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds of codes per row")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--precision",
        default="both",
        choices=("fp32", "bf16", "both"),
        help="both sides in float32, both under bfloat16 autocast, or each in turn (default)",
    )
    parser.add_argument("--side", choices=("ours", "theirs"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        return child(args)
    folder = args.folder
    if folder is None or not Path(folder).is_dir():
        from tunesmith.testing.checkpoints import build_checkpoint

        folder = folder or tempfile.mkdtemp(prefix=f"ts-{args.size}-")
        print(f"building a random {args.size} checkpoint in {folder} ...", file=sys.stderr)
        build_checkpoint(Path(folder), args.size)
    print(f"LoRA training step, {args.batch} x {args.seconds:g} s of codes, {args.device}, "
          f"torch {torch.__version__}, best of {args.rounds} rounds per side")  # fmt: skip
    print(f"{'':36}{'tokens/s':>10}{'step s':>9}{'peak GB':>9}")
    precisions = ("fp32", "bf16") if args.precision == "both" else (args.precision,)
    for precision in precisions:
        results: dict[str, list[dict]] = {"ours": [], "theirs": []}
        for _ in range(args.rounds):
            for side in ("ours", "theirs"):
                cmd = [sys.executable, __file__, "--side", side, "--folder", folder,
                       "--device", args.device, "--seconds", str(args.seconds),
                       "--batch", str(args.batch), "--steps", str(args.steps),
                       "--precision", precision]  # fmt: skip
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                results[side].append(json.loads(out.strip().splitlines()[-1]))
        best = {s: max(r, key=lambda x: x["tokens_per_s"]) for s, r in results.items()}
        label = "float32" if precision == "fp32" else "bfloat16 autocast"
        names = {"ours": f"tunesmith, {label}", "theirs": f"transformers + PEFT, {label}"}
        for side, r in best.items():
            print(f"{names[side]:36}{r['tokens_per_s']:10.0f}{r['step_s']:9.2f}"
                  f"{r['peak_bytes'] / 1e9:9.2f}")  # fmt: skip
        speed = best["ours"]["tokens_per_s"] / best["theirs"]["tokens_per_s"]
        memory = best["ours"]["peak_bytes"] / best["theirs"]["peak_bytes"]
        print(
            f"  {label}: tunesmith {speed:.2f}x the tokens per second at {memory:.2f}x the peak memory"
        )


if __name__ == "__main__":
    main()
