"""`tunesmith compose` end to end: a 3-section, 90 s piece from a file whose sections are
what `generate_tokens` gives each prompted with the codes before it (greedy), at the peak
memory of a plain 90 s long form; tags; inline sections; every bad input refused in one line
before any model loads, with nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch

from tunesmith import MusicGen
from tunesmith.audio.fades import apply_fades
from tunesmith.cli.main import main

PIECE = """\
title: Night drive
seed: 1
fade_in: 2
fade_out: 3
sections:
  - text: soft piano intro
    seconds: 20
  - text: "drums enter, full band"
    seconds: 40
  - text: outro, piano alone
    seconds: 30
"""
TEXTS = ["soft piano intro", "drums enter, full band", "outro, piano alone"]
# The bound on the composed piece's peak RSS over the plain long form's (same length, same
# model, same output): both are ~0.4 GB here, mostly torch; keeping each section's decoded
# audio (11.5 MB for 90 s) or the whole piece's codes per section would break it.
PEAK_BOUND_MIB = 8.0
# Runs the CLI in a process of its own and prints its own peak RSS (not its children's: a
# kernel build's compiler would count otherwise).
MEASURED = (
    "import resource, sys\n"
    "from tunesmith.cli.main import main\n"
    "code = main(sys.argv[1:])\n"
    "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
    "print(f'peak-rss-kib {peak}', file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def start_measured(*argv: str) -> subprocess.Popen[str]:
    """The CLI in a process of its own that ends by printing its peak RSS."""
    command = [sys.executable, "-c", MEASURED, *argv]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_measured(run: subprocess.Popen[str]) -> tuple[str, float]:
    """Its stderr and peak RSS in MiB, once it ends."""
    _, err = run.communicate(timeout=600)
    assert run.returncode == 0, err
    peak = [line for line in err.splitlines() if line.startswith("peak-rss-kib")]
    return err, int(peak[-1].split()[1]) / 1024


@pytest.fixture(scope="module")
def ninety_seconds(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The piece from the CLI, and a plain 90 s long form, each in a process of its own (side
    by side, one thread each: their steps are mostly Python's time on a core)."""
    folder = tmp_path_factory.mktemp("compose90")
    (folder / "piece.yaml").write_text(PIECE)
    common = ["--model", str(tiny_checkpoint), "--top-k", "1", "--normalize", "none"]
    common += ["--wav-subtype", "FLOAT", "--device", "cpu", "--threads", "1"]
    runs = [
        start_measured(
            "compose", str(folder / "piece.yaml"), "-o", str(folder / "piece.wav"), *common
        ),
        start_measured(
            "generate", "slow ambient", "--duration", "90", "-o", str(folder / "long.wav"), *common
        ),
    ]
    (piece, piece_peak), (_, long_peak) = (finish_measured(run) for run in runs)
    return {"folder": folder, "stderr": piece, "peaks": (piece_peak, long_peak)}


def test_a_90s_piece_from_the_cli_follows_its_sections(
    ninety_seconds: dict, tiny_model: MusicGen
) -> None:
    folder = ninety_seconds["folder"]
    assert "section 3/3: outro, piano alone" in ninety_seconds["stderr"]
    assert [p.name for p in sorted(folder.glob("*.wav"))] == ["long.wav", "piece.wav"]
    written, rate = sf.read(folder / "piece.wav", dtype="float32", always_2d=True)
    assert rate == 32000 and written.shape == (90 * 32000, 1)
    # Section by section: generate_tokens with its text, prompted with the last 12 s (30 s
    # window - 18 s stride) of the codes before it; section 2 (40 s) slides a window itself.
    codes: list[torch.Tensor] = []
    for text, seconds in zip(TEXTS, (20, 40, 30), strict=True):
        before = torch.cat(codes, dim=2)[..., -600:] if codes else None
        codes.append(
            tiny_model.generate_tokens(
                text, duration=seconds, top_k=1, audio_prompt=before, prompt_in_output=False
            )
        )
    want = apply_fades(tiny_model.decode(torch.cat(codes, dim=2)), 32000, 2.0, 3.0)[0]
    got = torch.from_numpy(written.T.copy())
    assert (got - want).abs().max() < 1e-4  # float32 samples; other codes differ by ~0.1
    tags = json.loads(sf.SoundFile(folder / "piece.wav").comment)
    assert [(s["start"], s["seconds"], s["text"]) for s in tags["sections"]] == [
        (0.0, 20, TEXTS[0]), (20.0, 40, TEXTS[1]), (60.0, 30, TEXTS[2]),
    ]  # fmt: skip
    assert (tags["seed"], tags["fade_in"], tags["fade_out"], tags["duration"]) == (1, 2, 3, 90)
    assert sf.SoundFile(folder / "piece.wav").title == "Night drive"


def test_its_peak_memory_matches_a_plain_long_form(ninety_seconds: dict) -> None:
    piece, long_form = ninety_seconds["peaks"]
    assert piece - long_form < PEAK_BOUND_MIB, f"piece {piece:.1f} MiB, long form {long_form:.1f}"


def test_inline_sections_with_a_transition(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "piece.flac"
    argv = ["compose", "--section", "0.6: soft piano", "--section", "0.4: drums enter"]
    argv += ["--transition", "0.2", "--seed", "4", "--fade-out", "0.1", "-o", str(out)]
    assert main([*argv, "--model", str(tiny_checkpoint)]) == 0
    info = sf.info(str(out))
    assert (info.frames, info.format) == (32000, "FLAC")
    tags = json.loads(sf.SoundFile(out).comment)
    assert [(s["start"], s["transition"]) for s in tags["sections"]] == [(0.0, 0), (0.6, 0.2)]
    assert sf.SoundFile(out).title == "soft piano / drums enter"


def test_the_shared_finishing_flags_apply_to_the_piece(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """compose takes generate's finishing: --key hints each section's text and is detected
    and reported; a fade given on the command line wins over the piece file's."""
    piece = tmp_path / "piece.yaml"
    piece.write_text("seed: 2\nfade_in: 0.3\nsections:\n  - {text: soft, seconds: 0.5}\n"
                     "  - {text: loud, seconds: 0.5}\n")  # fmt: skip
    out = tmp_path / "piece.wav"
    argv = ["compose", str(piece), "--key", "A minor", "--fade-in", "0.1", "-o", str(out)]
    assert main([*argv, "--model", str(tiny_checkpoint)]) == 0
    tags = json.loads(sf.SoundFile(out).comment)
    assert [s["text"] for s in tags["sections"]] == ["soft, in A minor", "loud, in A minor"]
    assert tags["finish"]["key_detected"] and tags["finish"]["fade_in"] == 0.1
    wav, _ = sf.read(str(out))
    assert abs(wav[0]) < 1e-3  # faded in


def test_a_loop_with_the_piece_files_fades_is_refused(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    piece = tmp_path / "piece.json"
    piece.write_text('{"fade_out": 1, "sections": [{"text": "a", "seconds": 8}]}')
    argv = ["compose", str(piece), "--loop", "2", "--bpm", "120", "-o", str(tmp_path / "x.wav")]
    assert main([*argv, "--model", str(tiny_checkpoint)]) == 1
    assert not (tmp_path / "x.wav").exists()


GOOD = ["--section", "2: a", "--section", "3: b"]
BAD = [
    (["--section", "0: a"], "--section 1 ('0: a'): seconds must be a positive number"),
    (["--section", "-3: a"], "seconds must be a positive number"),
    (["--section", "three: a"], "'three' is not a number of seconds"),
    (["--section", "3:"], "text must be a non-empty string"),
    (["--section", "3 a"], "give SECONDS: TEXT"),
    ([*GOOD, "--transition", "4"], "--section 2 ('3: b'): transition 4s is longer"),
    ([*GOOD, "--context", "30"], "context 30s is not shorter than the model's 30s window"),
    (["--section", "3000: a", "--section", "700: b"], "add up to 3700s"),
    (["--section", "1: a"] * 101, "101 sections: a piece may have at most 100"),
    ([*GOOD, "--fade-out", "6"], "fade_in 0s and fade_out 6s together are longer"),
    ([*GOOD, "--fade-in", "-1"], "fade_in must be a number of seconds >= 0"),
    ([*GOOD, "--top-k", "-1"], "top_k"),
    ([*GOOD, "--stride", "31"], "stride must be a number of seconds in [1, 30]"),
    ([*GOOD, "--device", "tpu"], "device"),
    ([*GOOD, "--model", "./no/such/folder"], "does not exist"),
]


@pytest.mark.parametrize(("extra", "message"), BAD)
def test_bad_input_is_one_line_before_any_model_loads(
    extra: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    def no_loading(*a, **k):
        raise AssertionError("the model must not be loaded for bad input")

    monkeypatch.setattr("tunesmith.musicgen.MusicGen.from_pretrained", no_loading)
    out = tmp_path / "o.wav"
    assert main(["compose", *extra, "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tunesmith: error:")
    assert message in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("p.yaml", PIECE.replace("seconds: 40", "seconds: forty"), "p.yaml, line 9: section 2"),
        ("p.yaml", PIECE.replace("fade_in: 2", "fade_inn: 2"), "line 3: unknown key 'fade_inn'"),
        ("p.txt", PIECE, "a piece file is YAML (.yaml, .yml), JSON (.json) or TOML (.toml)"),
        ("p.json", "{", "p.json, line 1: not valid JSON"),
    ],
)
def test_bad_piece_files_are_one_line(
    name: str, text: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    def no_loading(*a, **k):
        raise AssertionError("the model must not be loaded for bad input")

    monkeypatch.setattr("tunesmith.musicgen.MusicGen.from_pretrained", no_loading)
    (tmp_path / name).write_text(text)
    out = tmp_path / "o.wav"
    assert main(["compose", str(tmp_path / name), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not out.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["compose", "-o", "o.wav"],  # neither a file nor --section
        ["compose", "p.yaml", "--section", "2: a", "-o", "o.wav"],  # both
        ["compose", "--section", "2: a"],  # no -o
    ],
)
def test_usage_errors_are_one_line(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tunesmith: error:" in err


def test_ctrl_c_keeps_what_was_made(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Interrupted in section 2, the file holds the frames made so far (faded in, not out),
    and its tags name the sections begun."""
    from tunesmith.composition import compose

    real = compose.piece_blocks

    def stopping(model, plan):
        for count, (section, block) in enumerate(real(model, plan)):
            if count == 40 + 3 + 10:  # section 1's 40 frames and delay tail, then 10 steps
                raise KeyboardInterrupt
            yield section, block

    monkeypatch.setattr(compose, "piece_blocks", stopping)
    out = tmp_path / "piece.wav"
    argv = ["compose", "--section", "0.8: soft piano", "--section", "0.6: drums", "--seed", "2"]
    argv += [
        "--fade-in",
        "0.1",
        "--fade-out",
        "0.5",
        "-o",
        str(out),
        "--model",
        str(tiny_checkpoint),
    ]
    assert main(argv) == 130
    assert "kept the 0.9 s made so far" in capsys.readouterr().err
    # 10 steps into section 2: 7 frames (its first 3 steps complete none: the delay pattern).
    assert sf.info(str(out)).frames == (40 + 7) * 640
    assert [s["text"] for s in json.loads(sf.SoundFile(out).comment)["sections"]] == [
        "soft piano", "drums",
    ]  # fmt: skip
