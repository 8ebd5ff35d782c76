"""`tunesmith conform`, and tempo/loop flags on `generate` and `batch`, end to end; every bad
input refused in one line with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf

from tests.audio.test_loop_chunks import riff_chunks
from tunesmith.cli.main import main
from tunesmith.testing.signals import RATE, drums


@pytest.fixture(scope="module")
def drums_100(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("in") / "drums-100.wav"
    sf.write(str(path), drums(100, 12.0), RATE)
    return path


def test_conform_writes_exactly_4_bars_at_110_with_loop_points(
    drums_100: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "loop.wav"
    assert main(["conform", str(drums_100), "-o", str(out), "--bpm", "110", "--loop", "4"]) == 0
    frames = round(4 * 4 * 60 / 110 * RATE)  # 8.727 s
    assert sf.info(str(out)).frames == frames == 279273
    chunks = riff_chunks(out)  # another reader finds the loop points
    assert chunks[b"smpl"][36 + 8 : 36 + 16] == (0).to_bytes(4, "little") + (frames - 1).to_bytes(
        4, "little"
    )
    err = capsys.readouterr().err
    assert "measured 100.0" in err and "stretched" in err and "4 bars at 110.00 BPM" in err
    report = json.loads(sf.SoundFile(str(out)).comment)["finish"]
    assert report["tempo_before"] == pytest.approx(100, abs=0.5)
    assert report["tempo_after"] == pytest.approx(110, abs=0.5)


@pytest.mark.parametrize(
    ("flags", "words"),
    [(["--bpm", "400"], "bpm must be a tempo from 30 to 300"),
     (["--key", "H major"], "unknown key 'H major'"), (["--loop", "0"], "loop must be"),
     (["--bpm", "120", "--loop", "8"], "a loop of 8 bars at 120 BPM needs"),
     (["--loop", "2", "--format", "mp3"], "not mp3")],
)  # fmt: skip
def test_bad_input_is_one_line_and_writes_nothing(
    drums_100: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list, words: str
) -> None:
    out = tmp_path / "out"
    assert main(["conform", str(drums_100), "-o", str(out), *flags]) == 1
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1 and err.startswith("tunesmith: error: ")
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_cannot_be_read_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    assert main(["conform", str(bad), "-o", str(tmp_path / "o.wav"), "--bpm", "100"]) == 1
    err = capsys.readouterr().err
    assert "cannot read audio file" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.wav"]


def test_generate_with_bpm_and_loop_on_noise_says_what_it_did(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "gen.flac"
    argv = ["generate", "lofi beat", "-o", str(out), "--bpm", "110", "--loop", "4",
            "--duration", "9.5", "--seed", "1", "--model", str(tiny_checkpoint)]  # fmt: skip
    assert main(argv) == 0
    assert sf.info(str(out)).frames == 279273
    err = capsys.readouterr().err
    assert "no steady beat found" in err and "(no beat to start on)" in err
    tags = json.loads(sf.SoundFile(str(out)).comment)
    assert (
        tags["bpm"] == 110 and tags["loop"] == 4 and "no steady beat" in tags["finish"]["notes"][0]
    )
    assert sf.SoundFile(str(out)).title == "lofi beat, 110 bpm"  # the text the model read
    import mutagen

    assert mutagen.File(str(out))["LOOPLENGTH"] == ["279273"]


def test_batch_rows_take_their_own_finishing(tiny_checkpoint: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "p.csv"
    prompts.write_text("prompt,fade_in,loop\nsoft,0.25,\nloop me,,9\n")
    out = tmp_path / "clips"
    argv = ["batch", str(prompts), "--out-dir", str(out), "--duration", "1", "--bpm", "120",
            "--fade-out", "0.25", "--skip-bad-rows", "--model", str(tiny_checkpoint)]  # fmt: skip
    assert main(argv) == 0  # the second row, a loop with the job's fade-out, is bad: skipped
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert rows[0]["status"] == "done" and rows[0]["settings"]["fade_in"] == 0.25
    assert rows[0]["settings"]["fade_out"] == 0.25 and rows[0]["finish"]["fade_in"] == 0.25
    assert rows[0]["batch"]["prompts"] == ["soft, 120 bpm"]
    assert rows[1]["status"] == "failed" and "a loop takes no fade" in rows[1]["error"]


def test_from_manifest_finishes_the_clip_again(tiny_checkpoint: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("soft pad\n")
    out = tmp_path / "clips"
    argv = ["batch", str(prompts), "--out-dir", str(out), "--duration", "1", "--seed", "3",
            "--fade-in", "0.3", "--key", "D minor", "--model", str(tiny_checkpoint)]  # fmt: skip
    assert main(argv) == 0
    entry = json.loads((out / "manifest.jsonl").read_text())
    assert (
        entry["batch"]["prompts"] == ["soft pad, in D minor"] and entry["finish"]["fade_in"] == 0.3
    )
    again = tmp_path / "again.wav"
    argv = [
        "generate",
        "--from-manifest",
        str(out / "manifest.jsonl"),
        "--row",
        "1",
        "-o",
        str(again),
    ]
    assert main(argv) == 0
    first, second = sf.read(str(out / entry["file"]))[0], sf.read(str(again))[0]
    assert (first == second).all() and abs(second[0]) < 1e-3  # faded in, the same samples
