"""`tunesmith batch --ray` on a real local Ray cluster (2 replicas of the tiny checkpoint):
the same rows, files and manifest as one machine, resume after Ctrl-C, a replica killed
mid-job with every row still recorded exactly once, outputs to an fsspec URL.

Ray binds the machine's own address; each run here gets a network namespace of its own with
only loopback in it (`unshare --net`), so nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import builtins
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("ray")


def _can_isolate() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(
    not _can_isolate(), reason="needs `unshare --net` (root) to keep Ray on loopback"
)
ROWS = 20


def isolated(argv: list[str]) -> list[str]:
    """argv run in a fresh network namespace whose only interface is loopback."""
    return ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *argv]


def batch_argv(prompts: Path, out: Path | str, checkpoint: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "tunesmith", "batch", str(prompts), "--out-dir", str(out),
        "--model", str(checkpoint), "--device", "cpu", "--ray", "--replicas", "2", *extra,
    ]  # fmt: skip


def prompts_file(folder: Path, seconds: float = 0.3) -> Path:
    """20 rows; every fifth names its seed (it then runs alone, as `generate --seed` would)."""
    lines = ["prompt,duration,seed"]
    for i in range(ROWS):
        lines.append(f"tune number {i},{seconds},{100 + i if i % 5 == 0 else ''}")
    path = folder / "p.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def manifest(folder: Path) -> list[dict]:
    path = folder / "manifest.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run(argv: list[str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(isolated(argv), capture_output=True, text=True, timeout=timeout)


def started(argv: list[str], folder: Path, rows: int, timeout: float = 120) -> subprocess.Popen:
    """The job started in the background, once `rows` rows are in its manifest."""
    proc = subprocess.Popen(
        isolated(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + timeout
    while len(manifest(folder)) < rows:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            _, err = proc.communicate()
            pytest.fail(f"the job ended or stalled before {rows} rows: {err[-2000:]}")
        time.sleep(0.05)
    return proc


def test_twenty_rows_over_two_replicas_as_one_machine_makes_them(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    prompts = prompts_file(tmp_path)
    out = tmp_path / "out"
    result = run(batch_argv(prompts, out, tiny_checkpoint, "--seed", "7"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{ROWS} done, 0 failed" in result.stderr
    entries = manifest(out)
    assert [e["row"] for e in entries] == list(range(1, ROWS + 1))
    assert all(e["status"] == "done" and (out / e["file"]).is_file() for e in entries)
    assert {e["replica"] for e in entries} == {0, 1}  # both replicas worked
    assert all(e["node"] for e in entries)
    assert "replica 0 on" in result.stderr and "rows/min" in result.stderr
    # A seeded row is exactly `tunesmith generate --seed` (one thread, as each replica has).
    seeded = entries[5]
    alone = tmp_path / "alone.wav"
    generate = subprocess.run(
        [sys.executable, "-m", "tunesmith", "generate", seeded["prompt"], "-o", str(alone),
         "--seed", str(seeded["settings"]["seed"]), "--duration", "0.3", "--threads", "1",
         "--model", str(tiny_checkpoint), "--device", "cpu"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert generate.returncode == 0, generate.stderr
    want, _ = sf.read(str(alone), dtype="float32")
    got, _ = sf.read(str(out / seeded["file"]), dtype="float32")
    assert np.array_equal(got, want)
    # The same job on one machine writes the same files (same drawn seeds, same batches).
    local = tmp_path / "local"
    one = subprocess.run(
        [sys.executable, "-m", "tunesmith", "batch", str(prompts), "--out-dir", str(local),
         "--model", str(tiny_checkpoint), "--device", "cpu", "--seed", "7", "--threads", "1"],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr
    for mine, theirs in zip(entries, manifest(local), strict=True):
        assert mine["settings"] == theirs["settings"] and mine["file"] == theirs["file"]
        a, _ = sf.read(str(out / mine["file"]), dtype="float32")
        b, _ = sf.read(str(local / theirs["file"]), dtype="float32")
        assert np.array_equal(a, b), mine["row"]


def test_ctrl_c_leaves_a_manifest_that_resumes(tiny_checkpoint: Path, tmp_path: Path) -> None:
    prompts = prompts_file(tmp_path, seconds=3.0)
    out = tmp_path / "out"
    argv = batch_argv(prompts, out, tiny_checkpoint, "--batch-size", "1")
    proc = started(argv, out, rows=3)
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    first = manifest(out)
    assert 3 <= len(first) < ROWS, "the job finished before it could be interrupted"
    assert len({e["row"] for e in first}) == len(first)
    stamps = {e["file"]: (out / e["file"]).stat().st_mtime_ns for e in first}
    again = run(argv)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{ROWS - len(first)} done, 0 failed, {len(first)} already done" in again.stderr
    entries = manifest(out)
    assert [e["row"] for e in entries] == list(range(1, ROWS + 1))
    assert {f: (out / f).stat().st_mtime_ns for f in stamps} == stamps  # not made again


def test_a_killed_replica_loses_no_row_and_records_none_twice(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    prompts = prompts_file(tmp_path, seconds=3.0)
    out = tmp_path / "out"
    proc = started(batch_argv(prompts, out, tiny_checkpoint, "--batch-size", "1"), out, rows=2)
    replicas = subprocess.run(
        ["pgrep", "-f", "ray::Replica"], capture_output=True, text=True
    ).stdout.split()
    assert replicas, "no replica process found"
    os.kill(int(replicas[0]), signal.SIGKILL)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    assert f"{ROWS} done, 0 failed, 0 already done" in err  # each row recorded once
    entries = manifest(out)
    assert [e["row"] for e in entries] == list(range(1, ROWS + 1))
    assert all((out / e["file"]).is_file() for e in entries)
    assert not list(out.glob("*.partial"))


def test_outputs_to_an_fsspec_url(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """`memory://` (fsspec's in-process store, so the job runs in this script): files and
    manifest land under the URL, written by the driver alone."""
    prompts = tmp_path / "seven.csv"
    rows = "".join(f"tune {i},0.3,\n" for i in range(6))
    prompts.write_text(f"prompt,duration,top_p\n{rows}not a probability,0.3,2\n")
    script = f"""
import json, fsspec
from tunesmith.jobs.batch import JobOptions
from tunesmith.jobs.cluster import ClusterOptions, ModelSpec, run_on_ray
from tunesmith.jobs.prompts_file import read_prompts
rows = read_prompts({str(prompts)!r})  # row 7 fails for its own reason: recorded, job goes on
summary = run_on_ray(ModelSpec({str(tiny_checkpoint)!r}, device="cpu"), rows, "memory://job",
                     JobOptions(progress=False), ClusterOptions(replicas=2))
fs = fsspec.filesystem("memory")
lines = fs.cat_file("/job/manifest.jsonl").decode().splitlines()
files = [json.loads(line)["file"] for line in lines]
done = [json.loads(line)["file"] for line in lines if json.loads(line)["status"] == "done"]
print(json.dumps({{"done": summary.done, "failed": summary.failed,
                   "files": [fs.size("/job/" + f) for f in done]}}))
"""
    result = run([sys.executable, "-c", script])
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert sorted(report["done"]) == [1, 2, 3, 4, 5, 6] and report["failed"] == [7]
    assert len(report["files"]) == 6 and all(size > 1000 for size in report["files"])


def test_without_ray_it_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from tunesmith.cli.main import main

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    monkeypatch.setattr("tunesmith.musicgen.MusicGen.from_pretrained", None)
    (tmp_path / "p.txt").write_text("a tune\n")
    code = main(["batch", str(tmp_path / "p.txt"), "--out-dir", str(tmp_path / "o"), "--ray"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert "pip install 'tunesmith[ray]'" in err
