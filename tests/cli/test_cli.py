"""The CLI end to end, and every bad input refused in one line before any model work."""

from __future__ import annotations

import subprocess
import sys
import wave
from pathlib import Path

import pytest
import soundfile as sf

from tunesmith import __version__
from tunesmith.cli.main import main


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tunesmith", *argv], capture_output=True, text=True, timeout=300
    )


def test_help_and_version() -> None:
    assert "generate" in run("--help").stdout
    assert run("--version").stdout.strip() == f"tunesmith {__version__}"
    assert "--duration" in run("generate", "--help").stdout


def test_help_does_not_import_torch() -> None:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "tunesmith", "--help"],
        capture_output=True,
        text=True,
    )
    assert "torch" not in out.stderr


def test_generate_two_prompts_end_to_end(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "clip.wav"
    result = run(
        "generate", "lofi beat", "epic drums", "-o", str(out), "--duration", "0.5",
        "--seed", "1", "--device", "cpu", "--model", str(tiny_checkpoint),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for i in (1, 2):
        info = sf.info(str(tmp_path / f"clip-{i}.wav"))
        assert (info.samplerate, info.frames, info.channels) == (32000, 16000, 1)
        assert f"wrote {tmp_path / f'clip-{i}.wav'}" in result.stderr
    assert "in " in result.stderr and "loaded" in result.stderr
    assert result.stdout == ""  # status lines go to stderr; stdout carries data or nothing
    assert not out.exists()


def test_same_seed_same_file(tiny_checkpoint: Path, tmp_path: Path) -> None:
    common = ["--duration", "0.3", "--seed", "5", "--model", str(tiny_checkpoint)]
    assert main(["generate", "jazz", "-o", str(tmp_path / "a.wav"), *common]) == 0
    assert main(["generate", "jazz", "-o", str(tmp_path / "b.wav"), *common]) == 0
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()


def test_stream_to_file_and_stdout(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.wav"
    args = ["--duration", "1.0", "--seed", "2", "--model", str(tiny_checkpoint)]
    assert main(["generate", "x", "-o", str(out), "--stream", "--chunk", "0.25", *args]) == 0
    with wave.open(str(out)) as w:
        assert (w.getframerate(), w.getnframes()) == (32000, 32000)
    piped = subprocess.run(
        [sys.executable, "-m", "tunesmith", "generate", "x", "-o", "-", "--stream", *args],
        capture_output=True,
        timeout=300,
    )
    assert piped.returncode == 0
    assert len(piped.stdout) == 32000 * 2  # s16le mono
    assert b"wrote stdout" in piped.stderr


def test_continue_keeps_prompt_unless_asked(tiny_checkpoint: Path, tmp_path: Path) -> None:
    prompt = tmp_path / "p.wav"
    sf.write(str(prompt), [0.1, -0.1] * 11025, 44100)  # 0.5 s at 44.1 kHz
    common = ["--duration", "0.5", "--model", str(tiny_checkpoint), "--continue", str(prompt)]
    assert main(["generate", "x", "-o", str(tmp_path / "c.wav"), *common]) == 0
    assert sf.info(str(tmp_path / "c.wav")).frames == 32000
    assert (
        main(["generate", "x", "-o", str(tmp_path / "d.wav"), "--no-prompt-in-output", *common])
        == 0
    )
    assert sf.info(str(tmp_path / "d.wav")).frames == 16000


BAD = [
    (["--duration", "0"], "duration"),
    (["--duration", "-2"], "duration"),
    (["--duration", "nan"], "duration"),
    (["--duration", "4000"], "duration"),
    (["--top-k", "-1"], "top_k"),
    (["--top-p", "1.5"], "top_p"),
    (["--top-p", "-0.5"], "top_p"),
    (["--temperature", "0"], "temperature"),
    (["--device", "tpu"], "device"),
    (["--device", "cuda:7"], "device"),
    (["--stride", "0"], "stride"),
    (["--model", "./no/such/folder"], "does not exist"),
    (["--continue", "/no/such.wav"], "does not exist"),
    (["--melody", "/no/such.wav"], "does not exist"),
    (["--threads", "0"], "threads"),
]


@pytest.mark.parametrize(("extra", "word"), BAD)
def test_bad_input_one_line_no_model_work(
    extra: list[str], word: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    def no_loading(*a, **k):
        raise AssertionError("the model must not be loaded for bad input")

    monkeypatch.setattr("tunesmith.musicgen.MusicGen.from_pretrained", no_loading)
    code = main(["generate", "x", "-o", str(tmp_path / "o.wav"), *extra])
    err = capsys.readouterr().err
    assert code != 0
    assert err.count("\n") == 1 and err.startswith("tunesmith: error:")
    assert word in err


@pytest.mark.parametrize(
    "argv",
    [
        ["generate", "x", "-o", "o.wav", "--duration", "abc"],
        ["generate", "x", "-o", "o.wav", "--quantize", "int4"],
        ["generate", "x"],
        ["generate", "-o", "o.wav"],
        ["bogus"],
    ],
)
def test_usage_errors_are_one_line(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.count("\n") == 1 and err.startswith("tunesmith: error:") and "--help" in err
    if "int4" in argv:
        assert "not offered" in err and "int8 is the smallest" in err


@pytest.mark.parametrize(
    "output", ["/no/such/dir/out.wav", ".", *(["/proc/n.wav"] * Path("/proc").is_dir())]
)
def test_unwritable_output(output: str, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr("tunesmith.musicgen.MusicGen.from_pretrained", None)
    assert main(["generate", "x", "-o", output]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "cannot write" in err or "folder" in err
    assert output in err and ".tunesmith-" not in err  # the user's name, not a temp file's
    assert not Path("out.xyz").exists()


def test_stdout_needs_stream(capsys) -> None:
    assert main(["generate", "x", "-o", "-"]) == 1
    assert "--stream" in capsys.readouterr().err


def test_offline_hub_model_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tunesmith", "generate", "x", "-o", str(tmp_path / "o.wav"),
         "--model", "facebook/musicgen-small", "--device", "cpu"],
        capture_output=True, text=True, timeout=120,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")},
    )  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("tunesmith:")]
    assert len(lines) == 1 and "facebook/musicgen-small" in lines[0] and "--model" in lines[0]


def test_stream_to_stdout_refuses_a_format(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """-o - writes raw 16-bit PCM: a --format would be silently ignored, so it is refused."""
    monkeypatch.setattr("tunesmith.musicgen.MusicGen.from_pretrained", None)
    assert main(["generate", "x", "--stream", "-o", "-", "--format", "mp3"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--format" in err and "raw 16-bit PCM" in err


def test_melody_on_a_text_only_model_is_refused_before_loading(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    melody = tmp_path / "m.wav"
    sf.write(str(melody), [0.1, -0.1] * 8000, 16000)
    monkeypatch.setattr("tunesmith.musicgen.MusicGen.from_pretrained", None)
    argv = ["generate", "x", "-o", str(tmp_path / "o.wav"), "--melody", str(melody)]
    assert main([*argv, "--model", str(tiny_checkpoint)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--melody needs a melody checkpoint" in err
    assert "melody=" not in err  # the CLI's words, not Python's


@pytest.mark.parametrize("name", ["x.aiff", "x.au", "take.1", "x.flac.bak"])
def test_an_output_format_not_listed_is_refused(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """.aiff was written as AIFF: only the four formats the README lists are written."""
    monkeypatch.setattr("tunesmith.musicgen.MusicGen.from_pretrained", None)
    assert main(["generate", "x", "-o", str(tmp_path / name)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "which tunesmith does not write" in err
    assert ".wav, .flac, .mp3 or .ogg" in err and name in err
    assert list(tmp_path.iterdir()) == []


def test_an_output_without_extension_is_a_wav_named_so(
    tiny_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    """-o song wrote WAV audio into a file named `song`: it writes song.wav, and says so."""
    out = tmp_path / "song"
    argv = ["generate", "x", "-o", str(out), "--duration", "0.3", "--model", str(tiny_checkpoint)]
    assert main(argv) == 0
    assert sf.info(str(tmp_path / "song.wav")).format == "WAV" and not out.exists()
    assert f"wrote {tmp_path / 'song.wav'}" in capsys.readouterr().err


def test_a_continuation_longer_than_the_window_is_refused_before_loading(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    prompt = tmp_path / "long.wav"
    sf.write(str(prompt), [0.1, -0.1] * (4000 * 31), 8000)  # 31 s
    monkeypatch.setattr("tunesmith.musicgen.MusicGen.from_pretrained", None)
    argv = ["generate", "x", "-o", str(tmp_path / "o.wav"), "--continue", str(prompt)]
    assert main([*argv, "--model", str(tiny_checkpoint)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tunesmith: error: --continue")
    assert "31.00 s" in err and "shorter than the model's 30 s window" in err
