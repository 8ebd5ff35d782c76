"""`tunesmith train` end to end on a tiny checkpoint: what it writes, the code cache, resume
(the same result as an uninterrupted run), refusals, bad input, and --full checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from safetensors.torch import load_file

from tunesmith import MusicGen
from tunesmith.cli.main import main
from tunesmith.training import trainer as trainer_module

FAST = ["--steps", "6", "--segment-seconds", "1", "--save-every", "3", "--batch-size", "2"]


def _train(data: Path, model: Path, out: Path, *extra: str) -> int:
    return main(["train", str(data), "--model", str(model), "--out", str(out), *FAST, *extra])


def test_a_run_writes_adapter_log_plot_and_cache(clips, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(clips, tiny_checkpoint, out, "--val-share", "0.25") == 0
    err = capsys.readouterr().err
    assert "training data: 3 segments (0 files from the code cache)" in err
    assert "validation data: 1 segments" in err
    log = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6]
    # 3 training segments in batches of 2: a batch of 2 then of 1, each 4 codebooks x 50 frames
    assert [r["tokens"] for r in steps] == [400, 200] * 3
    assert all(r["tokens_per_s"] > 0 for r in steps)
    assert [r["step"] for r in log if "val_loss" in r] == [3, 6]
    assert (out / "loss.png").stat().st_size > 1000
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 16 and config["lora_alpha"] == 16
    assert len(list((out / "codes").glob("*.pt"))) == 4
    assert f"--adapter {out / 'adapter'}" in err

    # The adapter is what `generate --adapter` takes.
    wav = tmp_path / "out.wav"
    args = ["generate", "low hum", "--model", str(tiny_checkpoint), "--duration", "0.5"]
    assert main([*args, "--adapter", str(out / "adapter"), "-o", str(wav)]) == 0
    assert sf.info(wav).frames == 16000

    # A second run into the same folder is refused; --resume of a finished run does nothing
    # new and reads every file from the code cache.
    assert _train(clips, tiny_checkpoint, out, "--val-share", "0.25") == 1
    assert "already holds a run" in capsys.readouterr().err
    assert _train(clips, tiny_checkpoint, out, "--val-share", "0.25", "--resume") == 0
    err = capsys.readouterr().err
    assert "resumed at step 6 of 6" in err and "(3 files from the code cache)" in err
    # ... and one with other settings is refused, naming what differs.
    assert (
        _train(clips, tiny_checkpoint, out, "--val-share", "0.25", "--resume", "--lora-rank", "8")
        == 1
    )
    err = capsys.readouterr().err
    assert "lora-rank was 16, now 8" in err
    assert "start a new run with another --out" in err and "--steps" in err  # the way forward


def test_a_finished_run_is_extended_by_a_larger_steps(clips, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "run"
    exact = ("--val-share", "0", "--precision", "fp32")
    assert _train(clips, tiny_checkpoint, out, *exact) == 0
    six = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    capsys.readouterr()
    # --resume alone continues the run as it was planned: finished, and it says how to extend
    argv = ["train", str(clips), "--model", str(tiny_checkpoint), "--out", str(out), "--resume"]
    assert main([*argv, *exact, "--segment-seconds", "1", "--batch-size", "2"]) == 0
    err = capsys.readouterr().err
    assert "resumed at step 6 of 6" in err and "a larger --steps" in err
    # fewer steps than are done: refused, saying what would do
    assert _train(clips, tiny_checkpoint, out, *exact, "--resume", "--steps", "4") == 1
    err = capsys.readouterr().err
    assert "at step 6" in err and "--steps 6 or more" in err

    assert _train(clips, tiny_checkpoint, out, *exact, "--resume", "--steps", "7") == 0
    assert "resumed at step 6 of 7" in capsys.readouterr().err
    seven = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    # the 7th step learned: it ran at the 7-step schedule's rate, not the finished run's 0
    assert any(not torch.equal(six[k], seven[k]) for k in six)
    log = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6, 7]


def test_resume_after_ctrl_c_gives_the_uninterrupted_result(
    clips, tiny_checkpoint, tmp_path, monkeypatch, capsys
) -> None:
    straight = tmp_path / "straight"
    exact = ("--val-share", "0", "--precision", "fp32")  # float32 here; bf16 elsewhere
    assert _train(clips, tiny_checkpoint, straight, *exact) == 0

    original = trainer_module.Trainer._optimizer_step
    calls = {"n": 0}

    def interrupted(self):
        calls["n"] += 1
        if calls["n"] == 5:  # Ctrl-C during step 5: steps 1-4 are saved, step 5 is redone
            raise KeyboardInterrupt
        return original(self)

    broken = tmp_path / "broken"
    monkeypatch.setattr(trainer_module.Trainer, "_optimizer_step", interrupted)
    assert _train(clips, tiny_checkpoint, broken, *exact) == 130
    assert "saved step 4" in capsys.readouterr().err
    monkeypatch.setattr(trainer_module.Trainer, "_optimizer_step", original)
    assert _train(clips, tiny_checkpoint, broken, *exact, "--resume") == 0

    a = load_file(str(straight / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(broken / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    steps = [json.loads(x)["step"] for x in (broken / "train.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_unreadable_and_short_files_are_skipped_and_counted(
    clips, tiny_checkpoint, tmp_path, capsys
) -> None:
    (clips / "broken.wav").write_bytes(b"RIFF not really a wav")
    (clips / "broken.txt").write_text("broken")
    sf.write(clips / "blip.wav", np.full(8000, 0.3, dtype=np.float32), 32000)  # 0.25 s
    (clips / "blip.txt").write_text("blip")
    sf.write(clips / "quiet.wav", np.zeros(32000, dtype=np.float32), 32000)
    (clips / "quiet.txt").write_text("quiet")
    assert _train(clips, tiny_checkpoint, tmp_path / "run", "--val-share", "0") == 0
    err = capsys.readouterr().err
    assert "skipped 1 unreadable file(s)" in err and "broken.wav" in err
    assert "skipped 1 piece(s) shorter than 1 s" in err
    assert "skipped 1 silent segment(s)" in err


def test_bad_input_fails_before_any_work(clips, tiny_checkpoint, tmp_path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert _train(tmp_path / "empty", tiny_checkpoint, tmp_path / "o1") == 1
    assert "holds no audio files" in capsys.readouterr().err
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert _train(clips, tiny_checkpoint, blocker / "out") == 1
    assert "cannot write to output folder" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                str(clips),
                "--model",
                str(tiny_checkpoint),
                "--out",
                str(tmp_path / "o2"),
                "--segment-seconds",
                "40",
            ]
        )
        == 1
    )
    assert "--segment-seconds must be in (0, 30]" in capsys.readouterr().err
    assert _train(clips, tiny_checkpoint, tmp_path / "o3", "--lora-targets", "fc1,nothing") == 1
    assert "nothing name no linear layer" in capsys.readouterr().err


def test_melody_checkpoints_are_refused(clips, tmp_path, capsys) -> None:
    from tunesmith.testing.checkpoints import build_melody_model, save_checkpoint

    melody = save_checkpoint(build_melody_model(seed=1), tmp_path / "melody")
    assert _train(clips, melody, tmp_path / "run") == 1
    assert "is a melody checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "run" / "codes").exists()  # refused before encoding anything


def test_full_writes_a_checkpoint_both_libraries_load(clips, tiny_checkpoint, tmp_path) -> None:
    from transformers import MusicgenForConditionalGeneration

    out = tmp_path / "full"
    assert _train(clips, tiny_checkpoint, out, "--full", "--val-share", "0", "--lr", "1e-3") == 0
    ours = MusicGen.from_pretrained(out / "model", device="cpu")
    theirs = MusicgenForConditionalGeneration.from_pretrained(out / "model").eval()
    before = MusicGen.from_pretrained(tiny_checkpoint, device="cpu")
    inputs = torch.randint(0, 2048, (1, 4, 12))
    text = ours.condition(["low hum"])
    ids, mask = ours.tokenizer(["low hum"])
    with torch.no_grad():
        mine = ours.model.decoder.teacher_forced(inputs, text.states, text.mask)
        ref = theirs(input_ids=ids, attention_mask=mask, decoder_input_ids=inputs).logits
        old = before.model.decoder.teacher_forced(inputs, text.states, text.mask)
    torch.testing.assert_close(mine, ref.view(1, 4, 12, -1), rtol=1e-4, atol=1e-4)
    assert (mine - old).abs().max() > 1e-3  # the weights did change


def test_audio_of_any_format_rate_and_channels(tiny_checkpoint, tmp_path, capsys) -> None:
    """wav, flac, ogg and mp3 at other rates and channel counts: resampled to 32 kHz mono."""
    data = tmp_path / "mixed"
    data.mkdir()
    t = np.arange(44100 * 2) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 300 * t), np.sin(2 * np.pi * 500 * t)], 1) * 0.4
    sf.write(data / "a.flac", stereo, 44100)
    sf.write(data / "b.ogg", stereo[::3], 14700)
    sf.write(data / "c.mp3", stereo, 44100)
    sf.write(data / "d.wav", np.sin(2 * np.pi * 300 * np.arange(96000) / 48000) * 0.4, 48000)
    for name in ("a", "b", "c", "d"):
        (data / f"{name}.txt").write_text(f"clip {name}")
    out = tmp_path / "run"
    assert _train(data, tiny_checkpoint, out, "--val-share", "0") == 0
    assert "training data: 8 segments" in capsys.readouterr().err  # 2 one-second segments each


def test_audiocraft_files_train_lora_and_refuse_full_and_melody(clips, tmp_path, capsys) -> None:
    from tunesmith.testing.checkpoints import (
        build_hf_model,
        save_audiocraft_checkpoint,
        save_audiocraft_melody_copy,
        save_text_encoder,
    )

    original = build_hf_model("tiny", seed=2)
    folder = save_audiocraft_checkpoint(original, tmp_path / "audiocraft")
    t5 = save_text_encoder(original, tmp_path / "t5")
    common = ["--text-encoder", str(t5), "--val-share", "0"]
    assert _train(clips, folder, tmp_path / "lora", *common) == 0
    assert (tmp_path / "lora" / "adapter" / "adapter_model.safetensors").is_file()
    assert _train(clips, folder, tmp_path / "full", *common, "--full") == 1
    assert "train a LoRA adapter instead" in capsys.readouterr().err

    melody = save_audiocraft_melody_copy(folder, tmp_path / "melody")
    assert _train(clips, melody, tmp_path / "m", *common) == 1
    assert "melody" in capsys.readouterr().err
    assert not (tmp_path / "m" / "codes").exists()
