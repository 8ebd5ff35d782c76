"""The kernels' build: compiled from the C++ files shipped in the package (a wheel carries
them and builds them), cached under a name that changes with what went into it, announced
once on stderr."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from tunesmith.kernels.cpu import build

ROOT = Path(__file__).resolve().parents[3]


def test_the_sources_are_real_files() -> None:
    names = {p.name for p in build.source_files()}
    assert {"ops.cpp", "decoder.h", "int8_product.h", "head_attention.h"} <= names
    assert (build.CSRC / ".clang-format").is_file()


def test_build_name_follows_sources_flags_and_versions(monkeypatch, tmp_path: Path) -> None:
    name = build.build_name()
    assert name.startswith("tunesmith_kernels_") and name == build.build_name()
    monkeypatch.setattr(build, "CFLAGS", (*build.CFLAGS, "-DTUNESMITH_TEST"))
    flagged = build.build_name()
    monkeypatch.setattr(torch, "__version__", "0.0.0-test")
    versioned = build.build_name()
    for path in build.source_files():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / "ops.cpp").write_text((tmp_path / "ops.cpp").read_text() + "\n// edited\n")
    monkeypatch.setattr(build, "CSRC", tmp_path)
    edited = build.build_name()
    assert len({name, flagged, versioned, edited}) == 4


@pytest.mark.skipif(not build.supported_cpu(), reason="the kernels need x86-64 with AVX2")
def test_a_wheel_carries_the_sources_and_builds_them(tmp_path: Path) -> None:
    """`pip wheel .`, installed apart from this checkout, builds the kernels from the files it
    carries (a fresh build folder: it says so on stderr) and runs them."""
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(wheels), str(ROOT)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = wheels.glob("tunesmith-*.whl")
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if "/csrc/" in n}
    assert {f"tunesmith/kernels/cpu/csrc/{p.name}" for p in build.source_files()} <= shipped
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
         str(wheel)],
        check=True, capture_output=True,
    )  # fmt: skip
    probe = (
        "import torch, tunesmith\n"
        "from tunesmith.kernels.cpu import build, layout\n"
        f"assert tunesmith.__file__.startswith({str(site)!r}), tunesmith.__file__\n"
        "ops = build.kernels()\n"
        "assert ops is not None\n"
        "w = torch.randn(8, 64)\n"
        "x = torch.randn(2, 64)\n"
        "got = ops.fp32_linear(x, layout.pack(w, 64), 8, 64)\n"
        "assert torch.allclose(got, x @ w.T, atol=1e-5)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site), "TORCH_EXTENSIONS_DIR": str(tmp_path / "ext")}
    first = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert first.returncode == 0, first.stderr
    assert first.stderr.count("tunesmith: building the CPU kernels") == 1
    again = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert again.returncode == 0 and "building" not in again.stderr  # cached: nothing said
