"""A CPU kernel for the int8 decoder's few-row matrix products, built on first use.

A decoder step multiplies 2 rows (the two halves of a guided batch) by every weight matrix,
so its speed is how fast the weights stream from memory. torch's `_weight_int8pack_mm`
reaches about a third of the memory bandwidth on 2 cores here; this kernel reaches nearly
all of it (see benchmarks/bench_step.py), because it reads its weights in one straight line:

- weights are repacked once, at load time, into blocks of 4 output rows x 16 inputs (one
  64-byte cache line), K-chunk by K-chunk, so a thread reads one increasing address range and
  prefetches a fixed distance ahead (four interleaved row streams defeat the prefetcher);
- the input is split into chunks of at most 1024 columns, so the activations a chunk needs
  (2 rows x 4 KiB) stay in L1 next to the weight block being read;
- activations are rounded to int16, row by row (15 bits, against bfloat16's 8 in torch's
  kernel), so that one vpmaddwd does 16 multiply-adds with no widening to float: the float32
  version of this loop spent as long converting weights as reading them.

It needs x86-64 with AVX2 + FMA and a C++ compiler (torch.utils.cpp_extension builds it
once into torch's extension cache, ~10 s). Without them `available()` is False and callers
keep torch's kernel.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import shutil
import warnings

import torch

CHUNK = 1024  # input columns per pass (activations of one pass stay in L1)
ROWS, COLS = 4, 16  # a packed block: 4 output rows x 16 inputs, one cache line

# Vector math shared by the kernels' sources (AVX2 + FMA).
VECTOR_MATH = r"""
#include <immintrin.h>

namespace vecmath {
// e^x for 8 floats (Cephes' polynomial), relative error ~2e-7; inputs clamped to [-87, 88].
inline __m256 exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
  const __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

// GELU, 0.5 x (1 + erf(x / sqrt 2)), erf by Abramowitz & Stegun 7.1.26 (error < 1.5e-7).
inline __m256 gelu8(__m256 x) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256 z = _mm256_andnot_ps(sign, _mm256_mul_ps(x, _mm256_set1_ps(0.70710678118654752f)));
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(0.3275911f), z, one));
  __m256 poly = _mm256_set1_ps(1.061405429f);
  poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(-1.453152027f));
  poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(1.421413741f));
  poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(-0.284496736f));
  poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(0.254829592f));
  poly = _mm256_mul_ps(poly, t);
  const __m256 tail = _mm256_mul_ps(poly, exp8(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(z, z))));
  const __m256 erf_abs = _mm256_sub_ps(one, tail);
  const __m256 erf = _mm256_or_ps(erf_abs, _mm256_and_ps(x, sign));  // erf(-z) = -erf(z)
  return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x), _mm256_add_ps(one, erf));
}

inline __m128 gelu4(__m128 x) {
  return _mm256_castps256_ps128(gelu8(_mm256_castps128_ps256(x)));
}

// The four horizontal sums of a, b, c, d.
inline __m128 reduce4(__m256 a, __m256 b, __m256 c, __m256 d) {
  __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
  return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
}
}  // namespace vecmath
"""

# The walk over the packed layout [K/kc][N/4][kc/16][4][16] that both matrix kernels share:
# threads split the N/4 blocks, K-chunk by K-chunk, and each block serves the input rows two
# at a time while it is in L1. `block(c, b, m, rows, sums)` fills sums[0..rows) with the 4
# outputs of block b over chunk c for rows m..; `store(c, b, row, sums)` writes them.
BLOCK_SWEEP = r"""
#include <ATen/Parallel.h>

namespace vecmath {
template <typename Block, typename Store>
inline void sweep(int64_t M, int64_t N, int64_t chunks, const Block& block, const Store& store) {
  at::parallel_for(0, N / 4, 8, [&](int64_t b0, int64_t b1) {
    for (int64_t c = 0; c < chunks; ++c)
      for (int64_t b = b0; b < b1; ++b)
        for (int64_t m = 0; m < M; m += 2) {
          __m128 sums[2];
          const int rows = M - m >= 2 ? 2 : 1;
          block(c, b, m, rows, sums);
          for (int i = 0; i < rows; ++i) store(c, b, m + i, sums[i]);
        }
  });
}
}  // namespace vecmath
"""

_SOURCE = (
    VECTOR_MATH
    + BLOCK_SWEEP
    + r"""
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <cmath>

namespace {
constexpr int64_t kAhead = 4096;  // prefetch distance in bytes, along the packed stream

// Adds (w . x) for 4 rows and M (1 or 2) int16 inputs over one chunk; the block is
// [kc/16][4][16]. vpmaddwd multiplies 16 int16 pairs and sums them pairwise into int32: one
// instruction per 16 weights and input row, where float32 inputs took four (two widenings,
// two FMAs). Per lane a chunk adds kc/16 <= 64 pair sums of at most 2 * 127 * 32767: no
// overflow.
template <int M>
inline void block(const int16_t* x, int64_t ldx, const int8_t* w, int64_t kc, __m128 sums[2]) {
  __m256i acc[M][4];
  for (int m = 0; m < M; ++m)
    for (int r = 0; r < 4; ++r) acc[m][r] = _mm256_setzero_si256();
  for (int64_t k = 0; k < kc; k += 16, w += 64) {
    _mm_prefetch(reinterpret_cast<const char*>(w + kAhead), _MM_HINT_T0);
    __m256i xv[M];
    for (int m = 0; m < M; ++m)
      xv[m] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + m * ldx + k));
    for (int r = 0; r < 4; ++r) {
      const __m256i wv = _mm256_cvtepi8_epi16(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 16 * r)));
      for (int m = 0; m < M; ++m)
        acc[m][r] = _mm256_add_epi32(acc[m][r], _mm256_madd_epi16(wv, xv[m]));
    }
  }
  for (int m = 0; m < M; ++m)
    sums[m] = vecmath::reduce4(_mm256_cvtepi32_ps(acc[m][0]), _mm256_cvtepi32_ps(acc[m][1]),
                      _mm256_cvtepi32_ps(acc[m][2]), _mm256_cvtepi32_ps(acc[m][3]));
}

// Row by row: x [M, K] float32 -> int16 [M, K] with a scale each (x ~ q * scale), |q| <= 32767.
// 15 bits keep the inputs to ~1e-5 of each row's largest value: far inside the int8 weights'
// own error.
void quantize_rows16(const float* x, int64_t M, int64_t K, int16_t* q, float* scales) {
  for (int64_t m = 0; m < M; ++m) {
    const float* row = x + m * K;
    float top = 0.0f;
    for (int64_t k = 0; k < K; ++k) top = std::max(top, std::fabs(row[k]));
    const float scale = top > 0.0f ? top / 32767.0f : 1.0f;
    const __m256 inv = _mm256_set1_ps(1.0f / scale);
    int16_t* out = q + m * K;
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
      const __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(row + k), inv));
      const __m256i b = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(row + k + 8), inv));
      // packs works within 128-bit halves: put the 64-bit quarters back in order.
      const __m256i packed = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xD8);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + k), packed);
    }
    for (; k < K; ++k) out[k] = static_cast<int16_t>(std::lrintf(row[k] / scale));
    scales[m] = scale;
  }
}

// out [M, N] = (x [M, K] @ w.T) * scales (then GELU if `gelu`), w packed as
// [K/kc][N/4][kc/16][4][16].
at::Tensor int8_linear(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales,
                       int64_t kc, bool gelu) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous());
  TORCH_CHECK(packed.scalar_type() == at::kChar && packed.is_contiguous());
  TORCH_CHECK(scales.dim() == 1 && scales.scalar_type() == at::kFloat && scales.is_contiguous());
  const int64_t M = x.size(0), K = x.size(1), N = scales.size(0);
  TORCH_CHECK(packed.numel() == N * K && N % 4 == 0 && kc % 16 == 0 && K % kc == 0);
  TORCH_CHECK(kc <= 1024, "int8 kernel: chunks of at most 1024 inputs (int32 sums)");
  auto out = at::empty({M, N}, x.options());
  auto xq = at::empty({M, K}, x.options().dtype(at::kShort));
  auto xs = at::empty({M}, x.options());
  quantize_rows16(x.data_ptr<float>(), M, K, xq.data_ptr<int16_t>(), xs.data_ptr<float>());
  const int16_t* xp = xq.data_ptr<int16_t>();
  const float* xsp = xs.data_ptr<float>();
  const int8_t* wp = packed.data_ptr<int8_t>();
  const float* sp = scales.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t chunks = K / kc;
  vecmath::sweep(
      M, N, chunks,
      [&](int64_t c, int64_t b, int64_t m, int rows, __m128* sums) {
        const int8_t* w = wp + (c * (N / 4) + b) * 4 * kc;
        if (rows == 2) block<2>(xp + m * K + c * kc, K, w, kc, sums);
        else block<1>(xp + m * K + c * kc, K, w, kc, sums);
      },
      [&](int64_t c, int64_t b, int64_t row, __m128 sum) {
        float* o = op + row * N + 4 * b;
        const __m128 part = _mm_mul_ps(sum, _mm_set1_ps(xsp[row]));
        __m128 v = c == 0 ? part : _mm_add_ps(_mm_loadu_ps(o), part);
        if (c == chunks - 1) {
          const __m128 s = _mm_mul_ps(v, _mm_loadu_ps(sp + 4 * b));
          v = gelu ? vecmath::gelu4(s) : s;
        }
        _mm_storeu_ps(o, v);
      });
  return out;
}
}  // namespace

TORCH_LIBRARY(tunesmith, m) {
  m.def("int8_linear(Tensor x, Tensor packed, Tensor scales, int kc, bool gelu=False) -> Tensor");
}
TORCH_LIBRARY_IMPL(tunesmith, CPU, m) { m.impl("int8_linear", &int8_linear); }
"""
)


def supported_cpu() -> bool:
    """x86-64 with AVX2 + FMA (what the kernels here are compiled for)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def build(name: str, source: str, what: str, flags: list[str] | None = None) -> bool:
    """Compile and load a kernel's C++ `source` as extension `name` (cached on disk by torch);
    False, with one warning, where that cannot be done (no AVX2, compiler or ninja)."""
    if not supported_cpu():
        return False
    try:
        from torch.utils.cpp_extension import load_inline

        _find_ninja()
        load_inline(
            name=name,
            cpp_sources=[source],
            extra_cflags=["-O3", "-mavx2", "-mfma", "-fopenmp", *(flags or [])],
            extra_ldflags=["-fopenmp"],
            is_python_module=False,
        )
    except Exception as error:  # no compiler, no ninja, read-only cache...
        warnings.warn(f"{what} CPU kernel unavailable, using torch's: {error}", stacklevel=3)
        return False
    return True


def _find_ninja() -> None:
    """torch runs `ninja` from PATH; a virtual environment used without activating it has
    the pip-installed one (a dependency) off PATH, so put that folder on it."""
    if shutil.which("ninja") is not None:
        return
    with contextlib.suppress(ImportError):
        import ninja

        os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, os.environ.get("PATH", "")])


@functools.cache
def available() -> bool:
    """Build and load the kernel once per process; False (with a warning) if that fails."""
    if not build("tunesmith_int8", _SOURCE, "int8"):
        return False

    @torch.library.register_fake("tunesmith::int8_linear")
    def _(
        x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, kc: int, gelu: bool = False
    ) -> torch.Tensor:
        return x.new_empty(x.shape[0], scales.shape[0])

    return True


def chunk_for(in_features: int) -> int | None:
    """Columns per pass for a K-wide input, or None where the kernel does not apply."""
    if in_features % COLS:
        return None
    if in_features <= CHUNK:
        return in_features
    return CHUNK if in_features % CHUNK == 0 else None


def pack(weight: torch.Tensor, kc: int) -> torch.Tensor:
    """int8 [N, K] -> the kernel's layout [K/kc, N/4, kc/16, 4, 16] (flat, contiguous)."""
    n, k = weight.shape
    blocks = weight.view(n // ROWS, ROWS, k // kc, kc // COLS, COLS)
    return blocks.permute(2, 0, 3, 1, 4).contiguous().view(-1)


def unpack(packed: torch.Tensor, n: int, k: int, kc: int) -> torch.Tensor:
    """The inverse of `pack`: back to int8 [N, K]."""
    blocks = packed.view(k // kc, n // ROWS, kc // COLS, ROWS, COLS)
    return blocks.permute(1, 3, 0, 2, 4).reshape(n, k)


def int8_linear(
    x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, kc: int, gelu: bool = False
) -> torch.Tensor:
    """x float32 [M, K] (contiguous) -> float32 [M, N], with GELU applied if `gelu` (in the
    kernel: torch's own GELU on a few thousand values costs more in thread start-up than in
    arithmetic); needs `available()`."""
    return torch.ops.tunesmith.int8_linear(x, packed, scales, kc, gelu)
