"""The instruction sets the CPU kernels are built for, and which one this CPU runs.

Each is its own build of the same C++ (`csrc/`), compiled only for a CPU that reports the
instructions it uses, so no build holds an instruction its machine lacks:
- `avx512vnni`: the int8 products with 512-bit `vpdpbusd` (four int8 products summed per
  instruction, 64 at a time);
- `avxvnni`: the same with the 256-bit VEX form (Alder Lake and later, Zen 5);
- `avx2`: `vpmaddwd` on int16 (every x86-64 CPU of the last decade).
The best one the CPU reports is used; `TUNESMITH_CPU_KERNELS=<name>` forces one (tests run
every path this machine can; benchmarks compare them).
"""

from __future__ import annotations

import functools
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

ENV = "TUNESMITH_CPU_KERNELS"
BASE_FLAGS = ("-mavx2", "-mfma", "-mf16c")


@dataclass(frozen=True)
class Isa:
    """One build: its name, the CPU features it needs and the compiler flags it adds."""

    name: str
    needs: frozenset[str]
    flags: tuple[str, ...]

    @property
    def namespace(self) -> str:
        """Its ops' torch namespace (`torch.ops.tunesmith_<name>`): builds load side by side."""
        return f"tunesmith_{self.name}"


# Best first. Feature names as Linux's /proc/cpuinfo spells them.
ISAS = (
    Isa(
        "avx512vnni",
        frozenset({"avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni"}),
        (*BASE_FLAGS, "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni"),
    ),
    Isa("avxvnni", frozenset({"avx2", "fma", "f16c", "avx_vnni"}), (*BASE_FLAGS, "-mavxvnni")),
    Isa("avx2", frozenset({"avx2", "fma", "f16c"}), BASE_FLAGS),
)
NAMES = tuple(isa.name for isa in ISAS)


@functools.cache  # the hardware does not change under a process
def cpu_features(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The features of `ISAS` this CPU (and its OS) supports: /proc/cpuinfo's flags where there
    is one (the kernel drops the flags of registers it does not save), else torch's own
    detection (which knows no AVX-VNNI)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return frozenset()
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("flags"):
                return frozenset(line.partition(":")[2].split())
        return frozenset()
    found: set[str] = set()
    if torch.cpu._is_avx2_supported():
        found |= {"avx2", "fma", "f16c"}
    if torch.cpu._is_avx512_supported():
        found |= {"avx512f", "avx512bw", "avx512vl"}
        if torch.cpu._is_vnni_supported():
            found.add("avx512_vnni")
    return frozenset(found)


def runnable(features: frozenset[str]) -> list[Isa]:
    """The builds a CPU with `features` can run, best first."""
    return [isa for isa in ISAS if isa.needs <= features]


def choose(features: frozenset[str], environ: Mapping[str, str] = os.environ) -> Isa | None:
    """The build to use: the one `TUNESMITH_CPU_KERNELS` names, else the best this CPU runs;
    None where it runs none. A name that is unknown or that this CPU cannot run is an error,
    not a crash on an illegal instruction."""
    can = runnable(features)
    wanted = environ.get(ENV, "").strip().lower()
    if not wanted:
        return can[0] if can else None
    if wanted not in NAMES:
        raise ValueError(f"{ENV}={wanted!r} is not a kernel build: choose from {', '.join(NAMES)}")
    for isa in can:
        if isa.name == wanted:
            return isa
    have = ", ".join(isa.name for isa in can) or "none"
    raise ValueError(f"{ENV}={wanted}: this CPU cannot run that build (it runs: {have})")
