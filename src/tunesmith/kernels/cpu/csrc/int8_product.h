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
//   kernel), so that one vpmaddwd (AVX2) does 16 multiply-adds with no widening to float, or
//   two vpdpbusd (VNNI builds, on two byte planes) do 64 at once, with the same integer sums.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "block_sweep.h"

namespace int8k {
constexpr int64_t kAhead = 4096;  // prefetch distance in bytes, along the packed stream

#if defined(__AVX512VNNI__) || defined(__AVXVNNI__)
// The VNNI builds multiply with vpdpbusd: 4 (unsigned byte x signed byte) products summed into
// each int32 lane. The int16 inputs are split into two byte planes, q = 256 (h - 128) + l with
// h = (q >> 8) + 128 and l = q & 255 (both unsigned), so that
//   w . q = 256 (w . h) - 32768 sum(w) + (w . l),
// exact in integers (the AVX2 path's sums, in another order); sum(w) is one more vpdpbusd
// against bytes of 1, shared by the input rows. Per lane a chunk adds at most 256 products:
// |w . q| <= 256 * 127 * 32767 < 2^31, and 256 (w . h) <= 2^31 - 2^25: no overflow.

// Turns n int16 values (n a multiple of 16), in place, into what the products read: per 16
// inputs, their 16 h bytes, then their 16 l bytes.
inline void to_product_layout(int16_t* q, int64_t n) {
  const __m256i bias = _mm256_set1_epi16(static_cast<int16_t>(0x8000));
  const __m256i low = _mm256_set1_epi16(0xFF);
  for (int64_t i = 0; i < n; i += 16) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + i));
    const __m256i h = _mm256_srli_epi16(_mm256_xor_si256(v, bias), 8);
    const __m256i l = _mm256_and_si256(v, low);
    // packus interleaves 64-bit quarters (h0-7 l0-7 | h8-15 l8-15): put the h bytes first.
    const __m256i bytes = _mm256_permute4x64_epi64(_mm256_packus_epi16(h, l), 0xD8);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), bytes);
  }
}

// The exact int32 lane sums w . q from the planes' lane sums (wrapping shifts: see above).
template <typename V>
inline V combine(V h, V s, V l);
#endif

#if defined(__AVX512VNNI__)
template <>
inline __m512i combine(__m512i h, __m512i s, __m512i l) {
  return _mm512_add_epi32(_mm512_sub_epi32(_mm512_slli_epi32(h, 8), _mm512_slli_epi32(s, 15)), l);
}

// Input rows a block serves at once: 4 (16 of the 32 registers hold their sums), so that the
// block's sum(w) is shared by 4 rows, not 2 (a few-prompt batch's products are compute-bound).
constexpr int kRows = 4;

// Adds (w . x) for 4 rows and M (1 to 4) inputs over one chunk; the block is [kc/16][4][16]:
// one 512-bit register holds a block, each 128-bit lane one output row's 16 weights, and the
// 16 inputs (h or l plane) are broadcast to all four lanes.
template <int M>
inline void block(const int16_t* x, int64_t ldx, const int8_t* w, int64_t kc, __m128 sums[]) {
  const __m512i ones = _mm512_set1_epi8(1);
  __m512i h[M], l[M], s = _mm512_setzero_si512();
  for (int m = 0; m < M; ++m) h[m] = l[m] = _mm512_setzero_si512();
  for (int64_t k = 0; k < kc; k += 16, w += 64) {
    _mm_prefetch(reinterpret_cast<const char*>(w + kAhead), _MM_HINT_T0);
    const __m512i wv = _mm512_loadu_si512(w);
    s = _mm512_dpbusd_epi32(s, ones, wv);
    for (int m = 0; m < M; ++m) {
      const auto* xb = reinterpret_cast<const __m128i*>(x + m * ldx + k);
      h[m] = _mm512_dpbusd_epi32(h[m], _mm512_broadcast_i32x4(_mm_loadu_si128(xb)), wv);
      l[m] = _mm512_dpbusd_epi32(l[m], _mm512_broadcast_i32x4(_mm_loadu_si128(xb + 1)), wv);
    }
  }
  for (int m = 0; m < M; ++m) {
    const __m512 f = _mm512_cvtepi32_ps(combine(h[m], s, l[m]));
    const __m128 r0 = _mm512_castps512_ps128(f), r1 = _mm512_extractf32x4_ps(f, 1);
    const __m128 r2 = _mm512_extractf32x4_ps(f, 2), r3 = _mm512_extractf32x4_ps(f, 3);
    sums[m] = _mm_hadd_ps(_mm_hadd_ps(r0, r1), _mm_hadd_ps(r2, r3));  // lane r's sum: row r
  }
}
#elif defined(__AVXVNNI__)
template <>
inline __m256i combine(__m256i h, __m256i s, __m256i l) {
  return _mm256_add_epi32(_mm256_sub_epi32(_mm256_slli_epi32(h, 8), _mm256_slli_epi32(s, 15)), l);
}

constexpr int kRows = 2;  // input rows a block serves at once (16 registers)

// As the 512-bit block, in two 256-bit halves: rows 0-1, then rows 2-3.
template <int M>
inline void block(const int16_t* x, int64_t ldx, const int8_t* w, int64_t kc, __m128 sums[]) {
  const __m256i ones = _mm256_set1_epi8(1);
  __m256i h[M][2], l[M][2], s[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
  for (int m = 0; m < M; ++m)
    for (int j = 0; j < 2; ++j) h[m][j] = l[m][j] = _mm256_setzero_si256();
  for (int64_t k = 0; k < kc; k += 16, w += 64) {
    _mm_prefetch(reinterpret_cast<const char*>(w + kAhead), _MM_HINT_T0);
    __m256i wv[2];
    for (int j = 0; j < 2; ++j) {
      wv[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 32 * j));
      s[j] = _mm256_dpbusd_avx_epi32(s[j], ones, wv[j]);
    }
    for (int m = 0; m < M; ++m) {
      const auto* xb = reinterpret_cast<const __m128i*>(x + m * ldx + k);
      const __m256i xh = _mm256_broadcastsi128_si256(_mm_loadu_si128(xb));
      const __m256i xl = _mm256_broadcastsi128_si256(_mm_loadu_si128(xb + 1));
      for (int j = 0; j < 2; ++j) {
        h[m][j] = _mm256_dpbusd_avx_epi32(h[m][j], xh, wv[j]);
        l[m][j] = _mm256_dpbusd_avx_epi32(l[m][j], xl, wv[j]);
      }
    }
  }
  for (int m = 0; m < M; ++m) {
    const __m256 a = _mm256_cvtepi32_ps(combine(h[m][0], s[0], l[m][0]));  // rows 0 | 1
    const __m256 b = _mm256_cvtepi32_ps(combine(h[m][1], s[1], l[m][1]));  // rows 2 | 3
    const __m256 t = _mm256_hadd_ps(a, b);
    const __m256 u = _mm256_hadd_ps(t, t);  // rows 0, 2, 0, 2 | 1, 3, 1, 3
    sums[m] = _mm_unpacklo_ps(_mm256_castps256_ps128(u), _mm256_extractf128_ps(u, 1));
  }
}
#else
// The AVX2 build reads the int16 inputs as they are.
inline void to_product_layout(int16_t*, int64_t) {}

constexpr int kRows = 2;  // input rows a block serves at once (16 registers)

// Adds (w . x) for 4 rows and M (1 or 2) int16 inputs over one chunk; the block is
// [kc/16][4][16]. vpmaddwd multiplies 16 int16 pairs and sums them pairwise into int32: one
// instruction per 16 weights and input row, where float32 inputs took four (two widenings,
// two FMAs). Per lane a chunk adds kc/16 <= 64 pair sums of at most 2 * 127 * 32767: no
// overflow.
template <int M>
inline void block(const int16_t* x, int64_t ldx, const int8_t* w, int64_t kc, __m128 sums[]) {
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
#endif

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
  vecmath::sweep_blocks<kRows>(
      b0, b1, M, chunks,
      [&](int64_t c, int64_t b, int64_t m, int rows, __m128* sums) {
        const int8_t* wb = w + (c * (N / 4) + b) * 4 * kc;
        const int16_t* xb = xq + m * K + c * kc;
        if constexpr (kRows == 4) {
          if (rows == 4) return block<4>(xb, K, wb, kc, sums);
          if (rows == 3) return block<3>(xb, K, wb, kc, sums);
        }
        if (rows >= 2) block<2>(xb, K, wb, kc, sums);
        else block<1>(xb, K, wb, kc, sums);
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
