"""The CPU kernels' build: `csrc/ops.cpp` and the headers beside it, compiled once as one
torch extension on first use, with the system's C++ compiler and ninja, for the instruction
set `isa.choose` picks for this CPU (each set is its own build, with its own op namespace).

The build is cached under a name derived from the sources, the compiler flags and the torch
and Python versions, so two virtual environments (or two checkouts) never rebuild one folder in
turn, and an edited kernel is never mistaken for the cached one. The first build of a given
name says so once on stderr (10-30 s on 2 cores); later processes load it in well under a second.
The kernels need x86-64 with AVX2, FMA and F16C; without those, or without a compiler,
`kernels()` is None (with one warning) and callers keep torch's kernels.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import torch

from . import isa, ops

CSRC = Path(__file__).with_name("csrc")
SOURCES = ("ops.cpp",)  # the one translation unit; it includes every header in csrc/
# Hidden symbols: two builds loaded side by side never bind each other's inline functions.
# No implicit FMAs: what mirrors a torch formula (guidance) rounds as torch rounds it; the
# kernels write the FMAs they want.
CFLAGS = (
    "-O3",
    "-fopenmp",
    "-fvisibility=hidden",
    "-fvisibility-inlines-hidden",
    "-ffp-contract=off",
)
LDFLAGS = ("-fopenmp",)
BUILD_TIME = "10-30 s"  # what a first build takes on 2 cores, said before it starts


def supported_cpu() -> bool:
    """x86-64 with AVX2, FMA and F16C: the least any build needs."""
    return bool(isa.runnable(isa.cpu_features()))


def flags(chosen: isa.Isa) -> list[str]:
    """The compiler flags of one build: ours, its instruction set's, its op namespace."""
    return [*CFLAGS, *chosen.flags, f"-DTS_NAMESPACE={chosen.namespace}"]


def source_files() -> list[Path]:
    """Every file the build reads: the translation unit and the headers it includes."""
    return sorted([*CSRC.glob("*.h"), *CSRC.glob("*.cpp")])


def build_name(chosen: isa.Isa = isa.ISAS[-1]) -> str:
    """One build's name: its instruction set, sources, flags, torch and Python versions,
    hashed."""
    digest = hashlib.sha256()
    for path in source_files():
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(" ".join([*flags(chosen), *LDFLAGS, torch.__version__, sys.version]).encode())
    return f"tunesmith_kernels_{chosen.name}_{digest.hexdigest()[:16]}"


def available() -> bool:
    """Whether this CPU's kernels load here (built, or found in the cache)."""
    return kernels() is not None


def kernels() -> ops.Kernels | None:
    """The ops of the build `isa.choose` picks for this CPU (`TUNESMITH_CPU_KERNELS`
    forces one), loaded once per process; None, with one warning, where they cannot be (no
    AVX2, no compiler or ninja, no writable cache)."""
    chosen = isa.choose(isa.cpu_features())
    return None if chosen is None else kernels_for(chosen.name)


@functools.cache
def kernels_for(name: str) -> ops.Kernels | None:
    """The ops of one named build (tests compare builds), or None (with one warning) where
    this CPU cannot run it or it cannot be built."""
    chosen = next((i for i in isa.runnable(isa.cpu_features()) if i.name == name), None)
    if chosen is None:
        return None
    try:
        load(chosen)
    except Exception as error:  # no compiler, no ninja, read-only cache...
        warnings.warn(f"tunesmith's CPU kernels unavailable, using torch's: {error}", stacklevel=2)
        return None
    found = ops.Kernels(chosen.namespace)
    found.register_fakes()  # the ops' output shapes, for torch.compile's tracing
    return found


def load(chosen: isa.Isa) -> None:
    """Compile one build if it is not cached yet (saying so), then load it."""
    from torch.utils.cpp_extension import get_default_build_root
    from torch.utils.cpp_extension import load as load_extension

    _find_ninja()
    name = build_name(chosen)
    # Where torch builds extensions: $TORCH_EXTENSIONS_DIR if set, as torch itself reads it.
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    fresh = not (folder / f"{name}.so").exists()
    if fresh:
        print(
            f"tunesmith: building the CPU kernels ({chosen.name}) in {folder} (once; {BUILD_TIME})",
            file=sys.stderr,
            flush=True,
        )
    start = time.perf_counter()
    load_extension(
        name=name,
        sources=[str(CSRC / s) for s in SOURCES],
        extra_include_paths=[str(CSRC)],
        extra_cflags=flags(chosen),
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
