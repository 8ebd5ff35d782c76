"""The CPU kernels' build: `csrc/ops.cpp` and the headers beside it, compiled once as one
torch extension on first use, with the system's C++ compiler and ninja.

The build is cached under a name derived from the sources, the compiler flags and the torch
and Python versions, so two virtual environments (or two checkouts) never rebuild one folder in
turn, and an edited kernel is never mistaken for the cached one. The first build of a given
name says so once on stderr (10-30 s on 2 cores); later processes load it in well under a second.
The kernels need x86-64 with AVX2, FMA and F16C; without those, or without a compiler,
`available()` is False (with one warning) and callers keep torch's kernels.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import platform
import shutil
import sys
import time
import warnings
from pathlib import Path

import torch

CSRC = Path(__file__).with_name("csrc")
SOURCES = ("ops.cpp",)  # the one translation unit; it includes every header in csrc/
CFLAGS = ("-O3", "-mavx2", "-mfma", "-mf16c", "-fopenmp")
LDFLAGS = ("-fopenmp",)
BUILD_TIME = "10-30 s"  # what a first build takes on 2 cores, said before it starts


def supported_cpu() -> bool:
    """x86-64 with AVX2 + FMA (what the kernels are compiled for; F16C comes with them)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def source_files() -> list[Path]:
    """Every file the build reads: the translation unit and the headers it includes."""
    return sorted([*CSRC.glob("*.h"), *CSRC.glob("*.cpp")])


def build_name() -> str:
    """The extension's name: its sources, flags, torch and Python versions, hashed."""
    digest = hashlib.sha256()
    for path in source_files():
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(" ".join([*CFLAGS, *LDFLAGS, torch.__version__, sys.version]).encode())
    return f"tunesmith_kernels_{digest.hexdigest()[:16]}"


@functools.cache
def available() -> bool:
    """Build (or find in the cache) and load the kernels once per process; False, with one
    warning, where that cannot be done (no AVX2, no compiler or ninja, no writable cache)."""
    if not supported_cpu():
        return False
    try:
        load()
    except Exception as error:  # no compiler, no ninja, read-only cache...
        warnings.warn(f"tunesmith's CPU kernels unavailable, using torch's: {error}", stacklevel=2)
        return False
    from . import ops

    ops.register_fakes()  # the ops' output shapes, for torch.compile's tracing
    return True


def load() -> None:
    """Compile the extension if this build is not cached yet (saying so), then load it."""
    from torch.utils.cpp_extension import get_default_build_root
    from torch.utils.cpp_extension import load as load_extension

    _find_ninja()
    name = build_name()
    # Where torch builds extensions: $TORCH_EXTENSIONS_DIR if set, as torch itself reads it.
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    fresh = not (folder / f"{name}.so").exists()
    if fresh:
        print(
            f"tunesmith: building the CPU kernels in {folder} (once; {BUILD_TIME})",
            file=sys.stderr,
            flush=True,
        )
    start = time.perf_counter()
    load_extension(
        name=name,
        sources=[str(CSRC / s) for s in SOURCES],
        extra_include_paths=[str(CSRC)],
        extra_cflags=list(CFLAGS),
        extra_ldflags=list(LDFLAGS),
        build_directory=str(folder),
        is_python_module=False,
    )
    if fresh:
        took = time.perf_counter() - start
        print(f"tunesmith: CPU kernels built in {took:.0f} s", file=sys.stderr, flush=True)


def _find_ninja() -> None:
    """torch runs `ninja` from PATH; a virtual environment used without activating it has
    the pip-installed one (a dependency) off PATH, so put that folder on it."""
    if shutil.which("ninja") is not None:
        return
    with contextlib.suppress(ImportError):
        import ninja

        os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, os.environ.get("PATH", "")])
