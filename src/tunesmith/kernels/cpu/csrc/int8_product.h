// The int8 decoder's few-row matrix product (one-product op and whole step alike).
//
// A decoder step multiplies 2 rows (the two halves of a guided batch) by every weight matrix,
// so its speed is how fast the weights stream from memory. It reads them in one straight line:
// - weights are repacked once, at load time (layout.py), into blocks of 4 output rows x 16
//   inputs (one 64-byte cache line), K-chunk by K-chunk, so a thread reads one increasing
//   address range and prefetches a fixed distance ahead (four interleaved row streams defeat
//   the prefetcher);
// - the input is split into chunks of at most 1024 columns, so the activations a chunk needs
//   (2 rows x 4 KiB) stay in L1 next to the weight block being read;
// - activations are rounded to int16, row by row (15 bits, against bfloat16's 8 in torch's
//   kernel), so that one vpmaddwd does 16 multiply-adds with no widening to float.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "block_sweep.h"

namespace int8k {
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
inline void quantize_rows16(const float* x, int64_t M, int64_t K, int16_t* q, float* scales) {
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

using vecmath::Epilogue;

// Blocks b0..b1 (output columns 4 b0 .. 4 b1) of out [M, ldo] = epilogue((xq * xs) @ w.T *
// scales) for xq [M, K] int16 with row scales xs, w [N, K] packed as [K/kc][N/4][kc/16][4][16].
// Sums over earlier K-chunks wait in acc [M, N], which may be `out` itself unless adding.
template <Epilogue E>
void product_blocks(const int8_t* w, const float* scales, int64_t N, int64_t K, int64_t kc,
                    const int16_t* xq, const float* xs, int64_t M, float* acc, float* out,
                    int64_t ldo, int64_t b0, int64_t b1) {
  const int64_t chunks = K / kc;
  vecmath::sweep_blocks(
      b0, b1, M, chunks,
      [&](int64_t c, int64_t b, int64_t m, int rows, __m128* sums) {
        const int8_t* wb = w + (c * (N / 4) + b) * 4 * kc;
        if (rows == 2) block<2>(xq + m * K + c * kc, K, wb, kc, sums);
        else block<1>(xq + m * K + c * kc, K, wb, kc, sums);
      },
      [&](int64_t c, int64_t b, int64_t row, __m128 sum) {
        float* a = acc + row * N + 4 * b;
        const __m128 part = _mm_mul_ps(sum, _mm_set1_ps(xs[row]));
        const __m128 v = c == 0 ? part : _mm_add_ps(_mm_loadu_ps(a), part);
        if (c < chunks - 1) {
          _mm_storeu_ps(a, v);
          return;
        }
        vecmath::finish<E>(out + row * ldo + 4 * b, _mm_mul_ps(v, _mm_loadu_ps(scales + 4 * b)));
      });
}
}  // namespace int8k
