"""The CPU kernels' build: every C++ source of `cpu_int8`, `cpu_fp32`, `cpu_attention` and
`cpu_step` compiled as one extension, on first use.

One extension rather than one per kernel: most of a build is the compiler reading torch's
headers, so one build of all of them takes about as long as one of each (~30 s on 2 cores,
then cached on disk by torch). They need x86-64 with AVX2, FMA and F16C and a C++ compiler;
without them `available()` is False (with one warning) and callers keep torch's kernels.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import shutil
import warnings

import torch

from ...engine import cpu_step
from . import attention as cpu_attention
from . import fp32 as cpu_fp32
from . import int8 as cpu_int8
from .vector_math import BLOCK_SWEEP, VECTOR_MATH

NAME = "tunesmith_kernels"
HEADERS = r"""
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <omp.h>
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>
"""


def source() -> str:
    """The whole C++ source: shared pieces first, then each kernel's ops."""
    return "".join(
        [
            HEADERS,
            VECTOR_MATH,
            BLOCK_SWEEP,
            cpu_int8.INT8_PRODUCT,
            cpu_fp32.FP32_PRODUCT,
            cpu_attention.HEAD_ATTENTION,
            cpu_int8.OPS,
            cpu_fp32.OPS,
            cpu_attention.OPS,
            cpu_step.OPS,
        ]
    )


def supported_cpu() -> bool:
    """x86-64 with AVX2 + FMA (what the kernels are compiled for; F16C comes with them)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


@functools.cache
def available() -> bool:
    """Build (or find in torch's cache) and load the kernels once per process; False, with
    one warning, where that cannot be done (no AVX2, no compiler or ninja)."""
    if not supported_cpu():
        return False
    try:
        from torch.utils.cpp_extension import load_inline

        _find_ninja()
        load_inline(
            name=NAME,
            cpp_sources=[source()],
            extra_cflags=["-O3", "-mavx2", "-mfma", "-mf16c", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            is_python_module=False,
        )
    except Exception as error:  # no compiler, no ninja, read-only cache...
        warnings.warn(f"tunesmith's CPU kernels unavailable, using torch's: {error}", stacklevel=2)
        return False
    for module in (cpu_int8, cpu_fp32, cpu_attention):  # ops a compiled step traces
        module.register_fakes()
    return True


def _find_ninja() -> None:
    """torch runs `ninja` from PATH; a virtual environment used without activating it has
    the pip-installed one (a dependency) off PATH, so put that folder on it."""
    if shutil.which("ninja") is not None:
        return
    with contextlib.suppress(ImportError):
        import ninja

        os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, os.environ.get("PATH", "")])
