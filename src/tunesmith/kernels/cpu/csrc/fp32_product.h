// The float32 decoder's few-row matrix product, in int8_product.h's packed layout: float32
// weights and activations, float32 FMA accumulation (only the order of the sum differs from
// torch's).
#pragma once
#include <cstdint>

#include "block_sweep.h"

namespace f32k {
constexpr int64_t kAhead = 1024;  // prefetch distance in floats (4 KiB), along the stream

// Adds (w . x) for 4 rows and M (1 or 2) inputs over one chunk; the block is [kc/16][4][16].
template <int M>
inline void block(const float* x, int64_t ldx, const float* w, int64_t kc, __m128 sums[2]) {
  __m256 acc[M][4];
  for (int m = 0; m < M; ++m)
    for (int r = 0; r < 4; ++r) acc[m][r] = _mm256_setzero_ps();
  for (int64_t k = 0; k < kc; k += 16, w += 64) {
    __m256 xv[M][2];
    for (int m = 0; m < M; ++m) {
      xv[m][0] = _mm256_loadu_ps(x + m * ldx + k);
      xv[m][1] = _mm256_loadu_ps(x + m * ldx + k + 8);
    }
    for (int r = 0; r < 4; ++r) {
      _mm_prefetch(reinterpret_cast<const char*>(w + 16 * r + kAhead), _MM_HINT_T0);
      const __m256 lo = _mm256_loadu_ps(w + 16 * r), hi = _mm256_loadu_ps(w + 16 * r + 8);
      for (int m = 0; m < M; ++m) {
        acc[m][r] = _mm256_fmadd_ps(lo, xv[m][0], acc[m][r]);
        acc[m][r] = _mm256_fmadd_ps(hi, xv[m][1], acc[m][r]);
      }
    }
  }
  for (int m = 0; m < M; ++m)
    sums[m] = vecmath::reduce4(acc[m][0], acc[m][1], acc[m][2], acc[m][3]);
}

// Blocks b0..b1 (output columns 4 b0 .. 4 b1) of out [M, ldo] = epilogue(x [M, K] @ w.T),
// w [N, K] packed as [K/kc][N/4][kc/16][4][16]. Sums over earlier K-chunks wait in acc
// [M, N], which may be `out` itself unless adding.
template <vecmath::Epilogue E>
void product_blocks(const float* w, int64_t N, int64_t K, int64_t kc, const float* x, int64_t M,
                    float* acc, float* out, int64_t ldo, int64_t b0, int64_t b1) {
  const int64_t chunks = K / kc;
  vecmath::sweep_blocks<2>(
      b0, b1, M, chunks,
      [&](int64_t c, int64_t b, int64_t m, int rows, __m128* sums) {
        const float* wb = w + (c * (N / 4) + b) * 4 * kc;
        if (rows == 2) block<2>(x + m * K + c * kc, K, wb, kc, sums);
        else block<1>(x + m * K + c * kc, K, wb, kc, sums);
      },
      [&](int64_t c, int64_t b, int64_t row, __m128 sum) {
        float* a = acc + row * N + 4 * b;
        const __m128 v = c == 0 ? sum : _mm_add_ps(_mm_loadu_ps(a), sum);
        if (c < chunks - 1) _mm_storeu_ps(a, v);
        else vecmath::finish<E>(out + row * ldo + 4 * b, v);
      });
}
}  // namespace f32k
