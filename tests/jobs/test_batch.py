"""Batch jobs end to end on the tiny checkpoint: prompts files, manifest, resume, failures,
exact regeneration from a manifest row, and generate's output options."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf

from tunesmith.audio.files import read_tags
from tunesmith.audio.loudness import normalize_audio
from tunesmith.cli import main as cli
from tunesmith.jobs import batch
from tunesmith.jobs.prompts_file import BatchFileError, read_prompts
from tunesmith.options import GenerationOptions as Settings

Main = Callable[[list[str]], int]


@pytest.fixture
def main() -> Main:
    """The `tunesmith` command's entry point."""
    return cli.main


def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*a, **k):
        raise AssertionError("the model must not be loaded for bad input")

    monkeypatch.setattr("tunesmith.musicgen.MusicGen.from_pretrained", refuse)


def manifest(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]


def model_args(checkpoint: Path) -> list[str]:
    return ["--model", str(checkpoint), "--device", "cpu"]


def test_prompts_files(tmp_path: Path) -> None:
    defaults = Settings(duration=0.3)
    txt = tmp_path / "p.txt"
    txt.write_text("# a comment\nlofi beat\n\n  epic drums  \n#another\n")
    rows = read_prompts(txt, defaults)
    assert [(r.number, r.prompt, r.file) for r in rows] == [
        (1, "lofi beat", "001-lofi-beat.wav"),
        (2, "epic drums", "002-epic-drums.wav"),
    ]
    csv = tmp_path / "p.csv"
    csv.write_text(
        "prompt,duration,seed,top_k,file,format\n"
        'jazz,0.4,7,,"a.flac",\n"rock, loud",,,10,,ogg\nx,abc,,,,\ny,,1.5,,,\n'
    )
    rows = read_prompts(csv, defaults, "mp3")
    assert rows[0].settings == Settings(duration=0.4) and rows[0].seed == 7
    assert rows[0].file == "a.flac" and rows[0].format == "flac"
    assert rows[1].prompt == "rock, loud" and rows[1].file == "002-rock-loud.ogg"
    assert rows[1].settings == Settings(duration=0.3, top_k=10) and rows[1].seed is None
    assert "duration must be a number" in str(rows[2].error)
    assert "seed must be a whole number" in str(rows[3].error)
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(
        '{"prompt": "a", "seed": 123456789012345678, "cfg": 1}\n\n{"prompt": null, "file": "u"}\n'
        '{"prompt": "b", "duration": -1}\n{"prompt": "c", "file": "u.wav"}\n'
    )
    rows = read_prompts(jsonl, defaults)
    assert rows[0].seed == 123456789012345678
    assert rows[0].settings == Settings(duration=0.3, cfg_scale=1.0)
    assert (rows[1].prompt, rows[1].file, rows[1].error) == (None, "u.wav", None)
    assert "duration" in str(rows[2].error)
    assert "row 2's" in str(rows[3].error)  # two rows cannot write the same file


def test_done_means_same_row_same_job_and_file_present(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("lofi\n")
    row = read_prompts(tmp_path / "p.txt", Settings(duration=0.3))[0]
    base = {"model": "m", "quantize": None, "normalize": "loudness"}
    entry = json.loads(json.dumps(row.entry(base, seed=4)))
    (tmp_path / row.file).write_bytes(b"audio")
    assert batch.is_done(row, entry, tmp_path, base)
    assert not batch.is_done(row, entry, tmp_path, {**base, "normalize": "peak"})
    assert not batch.is_done(row, {**entry, "prompt": "jazz"}, tmp_path, base)
    assert not batch.is_done(row, {**entry, "status": "failed"}, tmp_path, base)
    longer = dataclasses.replace(row, settings=Settings(duration=0.5))
    assert not batch.is_done(longer, entry, tmp_path, base)
    assert not batch.is_done(dataclasses.replace(row, seed=5), entry, tmp_path, base)
    (tmp_path / row.file).unlink()
    assert not batch.is_done(row, entry, tmp_path, base)


@pytest.mark.parametrize(
    ("name", "text", "words"),
    [
        ("p.csv", "prompt,mood\nx,happy\n", "unknown column(s) 'mood'"),
        ("p.csv", "text\nx\n", "'prompt' column"),
        ("p.jsonl", '{"prompt": "x"}\n{"prompt": "y",\n', "line 2: not valid JSON"),
        ("p.jsonl", '{"prompt": "x", "steps": 3}\n', "unknown column(s) 'steps'"),
        ("p.jsonl", '["x"]\n', "JSON object"),
        ("p.txt", "# only a comment\n", "no prompts"),
        ("p.yaml", "- x\n", ".txt, .csv or .jsonl"),
        ("missing.txt", None, "cannot read"),
    ],
)
def test_bad_prompts_file_is_one_line(
    main: Main, tmp_path: Path, monkeypatch, capsys, name: str, text: str | None, words: str
) -> None:
    no_model(monkeypatch)
    if text is not None:
        (tmp_path / name).write_text(text)
    code = main(["batch", str(tmp_path / name), "--out-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and err.startswith("tunesmith: error:")
    assert words in err
    with pytest.raises(BatchFileError):
        read_prompts(tmp_path / name, Settings())


def test_twenty_rows_end_to_end(main: Main, tiny_checkpoint: Path, tmp_path: Path) -> None:
    lines = ["prompt,duration,seed,format"]
    for i in range(20):
        seed = str(100 + i) if i % 5 == 0 else ""
        duration = "0.4" if i < 8 else "0.2"
        lines.append(f"prompt number {i},{duration},{seed},{['wav', 'flac', 'ogg', 'mp3'][i % 4]}")
    (tmp_path / "p.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    argv = ["batch", str(tmp_path / "p.csv"), "--out-dir", str(out), *model_args(tiny_checkpoint)]
    assert main([*argv, "--batch-size", "4", "--seed", "9"]) == 0
    entries = manifest(out)
    assert [e["row"] for e in entries] == list(range(1, 21))
    assert all(e["status"] == "done" and e["error"] is None for e in entries)
    for i, entry in enumerate(entries):
        assert entry["prompt"] == f"prompt number {i}"
        assert entry["model"] == str(tiny_checkpoint.resolve())
        assert entry["normalize"] == "loudness" and entry["seconds_taken"] > 0
        assert entry["settings"]["duration"] == (0.4 if i < 8 else 0.2)
        if i % 5 == 0:
            assert (entry["settings"]["seed"], entry["seed_from"]) == (100 + i, "row")
            assert entry["batch"] == {"prompts": [entry["prompt"]], "index": 0}
        else:
            assert isinstance(entry["settings"]["seed"], int) and entry["seed_from"] == "drawn"
            assert 1 <= len(entry["batch"]["prompts"]) <= 4
        path = out / entry["file"]
        assert path.suffix == "." + entry["format"] and sf.info(str(path)).samplerate == 32000
        tags = read_tags(path)
        assert tags["title"] == entry["prompt"]
        assert json.loads(tags["comment"])["seed"] == entry["settings"]["seed"]
        if entry["format"] in ("wav", "flac") and i < 8:  # loud enough, long enough to meter
            data, rate = sf.read(str(path), always_2d=True)
            assert pyloudnorm.Meter(rate).integrated_loudness(data) == pytest.approx(-14, abs=0.5)
            assert np.abs(data).max() <= 1.0


def test_interrupted_job_resumes_without_redoing_rows(
    main: Main, tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "p.txt").write_text("".join(f"clip {i}\n" for i in range(20)))
    out = tmp_path / "out"
    argv = ["batch", str(tmp_path / "p.txt"), "--out-dir", str(out), "--duration", "0.2"]
    argv += ["--batch-size", "10", *model_args(tiny_checkpoint)]
    real_save = batch.save_clip
    saved: list[Path] = []

    def save_then_stop(path: Path, *args, **kwargs):
        if stop_after is not None and len(saved) == stop_after:
            raise KeyboardInterrupt
        saved.append(path)
        return real_save(path, *args, **kwargs)

    monkeypatch.setattr(batch, "save_clip", save_then_stop)
    stop_after: int | None = 7
    assert main(argv) == 130
    first = manifest(out)
    assert [e["row"] for e in first] == list(range(1, 8))
    stamps = {e["file"]: (out / e["file"]).stat().st_mtime_ns for e in first}
    saved.clear()
    stop_after = None
    assert main(argv) == 0
    assert len(saved) == 13 and not {p.name for p in saved} & set(stamps)
    entries = manifest(out)
    assert [e["row"] for e in entries] == list(range(1, 21))
    assert all(e["status"] == "done" for e in entries)
    assert {f: (out / f).stat().st_mtime_ns for f in stamps} == stamps
    saved.clear()
    assert main(argv) == 0 and saved == []  # all done: nothing to do
    (out / entries[3]["file"]).unlink()
    assert main(argv) == 0 and [p.name for p in saved] == [entries[3]["file"]]


def test_each_file_gets_its_own_picture(main: Main, tiny_checkpoint: Path, tmp_path: Path) -> None:
    """NAME.flac, NAME.mp3 and NAME.ogg each get a picture (they shared NAME.png)."""
    pytest.importorskip("matplotlib")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        "".join(f'{{"prompt": "x", "file": "a.{f}"}}\n' for f in ("flac", "mp3", "ogg"))
    )
    argv = ["batch", str(prompts), "--out-dir", str(tmp_path / "out"), "--plot"]
    assert main([*argv, "--duration", "0.2", *model_args(tiny_checkpoint)]) == 0
    pictures = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert pictures == ["a.flac.png", "a.mp3.png", "a.ogg.png"]


def test_bad_rows_are_listed_before_the_model_loads(
    main: Main, tmp_path: Path, monkeypatch, capsys
) -> None:
    """Every row that cannot run, with its line in the file and why; nothing made or written."""
    no_model(monkeypatch)
    csv = tmp_path / "p.csv"
    csv.write_text(
        "prompt,duration,seed,file\n"
        'good,,,\nnegative,-2,,\n\n"two\nlines",,abc,\nclip,,,x.aiff\nfine,,3,\n'
    )
    out = tmp_path / "out"
    assert main(["batch", str(csv), "--out-dir", str(out)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"tunesmith: error: {csv} line 3: duration must be a number of seconds in (0, 3600], "
        "got -2.0",
        f"tunesmith: error: {csv} line 5: seed must be a whole number, got 'abc'",
        f"tunesmith: error: {csv} line 7: file 'x.aiff' ends in .aiff, which tunesmith does "
        "not write: end it in .wav, .flac, .mp3 or .ogg",
        "tunesmith: error: 3 of 5 rows cannot run, so nothing was made: fix them, or add "
        "--skip-bad-rows to make the other 2",
    ]
    assert not out.exists()
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('# a comment\n{"prompt": "a"}\n\n{"prompt": "b", "top_p": 2}\n')
    assert main(["batch", str(jsonl), "--out-dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{jsonl} line 4: top_p must be a number in [0, 1]" in err and "1 of 2 rows" in err
    assert not out.exists()


def test_skip_bad_rows_makes_the_others(
    main: Main, tiny_checkpoint: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    (tmp_path / "p.csv").write_text(
        "prompt,duration,format,file\n"
        "good one,,,\nbad duration,abc,,\nnegative,-1,,\nbad format,,xyz,\n"
        "escapes,,,../evil.wav\nblocked,,,blocker/x.wav\ngood two,,,\nwrite fails,,,\n"
    )
    out = tmp_path / "out"
    out.mkdir()
    (out / "blocker").write_text("a file where a folder is needed")
    real_save = batch.save_clip

    def save(path: Path, *args, **kwargs):  # a failure only writing can find
        if "write-fails" in path.name:
            raise OSError("disk full")
        return real_save(path, *args, **kwargs)

    monkeypatch.setattr(batch, "save_clip", save)
    argv = ["batch", str(tmp_path / "p.csv"), "--out-dir", str(out), "--duration", "0.2"]
    argv += ["--skip-bad-rows", *model_args(tiny_checkpoint)]
    assert main(argv) == 1  # the write that failed
    err = capsys.readouterr().err.strip().splitlines()
    skipped = [line for line in err if line.startswith("skipping")]
    assert [line.split(":")[0] for line in skipped] == [
        f"skipping {tmp_path / 'p.csv'} line {n}" for n in (3, 4, 5, 6, 7)
    ]
    assert "'blocker' in the output folder is a file" in skipped[4]
    assert err[-1].startswith("batch: 2 done, 1 failed, 0 already done, 5 bad rows skipped")
    entries = {e["row"]: e for e in manifest(out)}
    assert [r for r, e in entries.items() if e["status"] == "done"] == [1, 7]
    assert "duration must be a number" in entries[2]["error"]
    assert "duration must be a number of seconds in (0, 3600]" in entries[3]["error"]
    assert "unknown format" in entries[4]["error"]
    assert "inside the output folder" in entries[5]["error"]
    assert "is a file" in entries[6]["error"]
    assert "disk full" in entries[8]["error"] and entries[8]["settings"]["duration"] == 0.2
    assert not (tmp_path / "evil.wav").exists()
    monkeypatch.setattr(batch, "save_clip", real_save)
    assert main(argv) == 0  # failures retried, done kept; bad rows still skipped
    assert "2 already done, 5 bad rows skipped" in capsys.readouterr().err


def test_from_manifest_reproduces_the_samples(
    main: Main, tiny_checkpoint: Path, tiny_model, tmp_path: Path
) -> None:
    rows = [{"prompt": "a"}, {"prompt": "bb bb"}, {"prompt": None}, {"prompt": "d", "seed": 5}]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    common = ["--duration", "0.3", "--wav-subtype", "FLOAT", *model_args(tiny_checkpoint)]
    assert main(["batch", str(tmp_path / "p.jsonl"), "--out-dir", str(out), *common]) == 0
    entries = manifest(out)
    assert (
        entries[1]["batch"]["prompts"] == ["a", "bb bb", None] and entries[1]["batch"]["index"] == 1
    )
    for entry in entries:
        again = tmp_path / f"again-{entry['row']}.wav"
        argv = ["generate", "--from-manifest", str(out / "manifest.jsonl"), "--row"]
        assert main([*argv, str(entry["row"]), "-o", str(again), "--device", "cpu"]) == 0
        original, _ = sf.read(str(out / entry["file"]), dtype="float32")
        regenerated, _ = sf.read(str(again), dtype="float32")
        assert np.array_equal(original, regenerated), entry["row"]
        assert sf.info(str(again)).subtype == "FLOAT"
    # the seeded row is exactly `generate --seed 5 d`: batching does not change it
    alone = tiny_model.generate("d", duration=0.3, seed=5)[0]
    expected = normalize_audio(alone, tiny_model.sample_rate, "loudness").numpy()[0]
    original, _ = sf.read(str(out / entries[3]["file"]), dtype="float32")
    assert np.allclose(original, expected, atol=1e-6)


def test_generate_format_normalize_plot(main: Main, tiny_checkpoint: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    argv = ["generate", "x", "-o", str(tmp_path / "song"), "--format", "flac", "--plot"]
    assert (
        main([*argv, "--normalize", "peak", "--duration", "0.3", *model_args(tiny_checkpoint)]) == 0
    )
    data, _ = sf.read(str(tmp_path / "song.flac"))
    assert np.abs(data).max() == pytest.approx(10 ** (-1 / 20), abs=1e-3)
    assert (tmp_path / "song.flac.png").is_file()
    assert isinstance(json.loads(read_tags(tmp_path / "song.flac")["comment"])["seed"], int)


@pytest.mark.parametrize(
    ("argv", "code", "words"),
    [
        (["generate", "-o", "o.wav"], 2, "PROMPT"),
        (["generate", "x", "-o", "o.wav", "--row", "2"], 2, "--from-manifest"),
        (["generate", "--from-manifest", "m.jsonl", "-o", "o.wav"], 2, "--row"),
        (["generate", "x", "--from-manifest", "m.jsonl", "--row", "1", "-o", "o.wav"], 2, "PROMPT"),
        (["generate", "--from-manifest", "/no/m.jsonl", "--row", "1", "-o", "o.wav"], 1, "exist"),
        (["generate", "x", "-o", "o.wav", "--format", "mp3"], 1, "does not end in .mp3"),
        (["generate", "x", "-o", "o.wav", "--stream", "--normalize", "peak"], 1, "--stream"),
        (["batch", "p.txt", "--out-dir", "o", "--batch-size", "0"], 1, "--batch-size"),
        (["batch", "p.txt"], 2, "--out-dir"),
    ],
)
def test_usage_errors_are_one_line(
    main: Main, monkeypatch, capsys, argv: list[str], code: int, words: str
) -> None:
    no_model(monkeypatch)
    try:
        got = main(argv)
    except SystemExit as exit_info:
        got = int(exit_info.code or 0)
    err = capsys.readouterr().err
    assert got == code and err.count("\n") == 1 and err.startswith("tunesmith: error:")
    assert words in err


def test_a_rerun_with_nothing_left_draws_no_bar(
    main: Main, tiny_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    (tmp_path / "p.txt").write_text("one\ntwo\n")
    argv = ["batch", str(tmp_path / "p.txt"), "--out-dir", str(tmp_path / "out")]
    argv += ["--duration", "0.2", *model_args(tiny_checkpoint)]
    assert main(argv) == 0
    assert "frame" in capsys.readouterr().err  # the first run's bar
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "frame" not in captured.err and "2 already done" in captured.err
    assert captured.out == ""  # status lines go to stderr
