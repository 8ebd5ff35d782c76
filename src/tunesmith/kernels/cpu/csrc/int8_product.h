// The int8 decoder's few-row matrix product (one-product op and whole step alike).
//
// A decoder step multiplies 2 rows (the two halves of a guided batch) by every weight matrix,
// so its speed is how fast the weights stream from memory. It reads them in one straight line:
// - weights are repacked once, at load time (layout.py), into blocks of 4 output rows x 16
//   inputs (16 x 4 on the 512-bit build; one 64-byte cache line either way), K-chunk by
//   K-chunk, so a thread reads one increasing address range and prefetches a fixed distance
//   ahead (four interleaved row streams defeat the prefetcher);
// - the input is split into chunks of at most 1024 columns, so the activations a chunk needs
//   (2 rows x 4 KiB) stay in L1 next to the weight block being read;
// - activations are rounded to int16, row by row (15 bits, against bfloat16's 8 in torch's
//   kernel), so that one vpmaddwd (AVX2) does 16 multiply-adds with no widening to float, or
//   two vpdpbusd (VNNI builds, on two byte planes) do 64 at once. Every build sums a chunk's
//   products exactly and rounds the sum once to float32, so all give the same floats.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "block_sweep.h"

namespace int8k {
constexpr int64_t kAhead = 4096;  // prefetch distance in bytes, along the packed stream

#if defined(__AVX512VNNI__) || defined(__AVXVNNI__)
// The VNNI builds multiply with vpdpbusd: 4 (unsigned byte x signed byte) products summed into
// each int32 lane. The int16 inputs are split into two byte planes, q = 256 (h - 128) + l with
// h = (q >> 8) + 128 and l = q & 255 (both unsigned), so that
//   w . q = 256 (w . h) - 32768 sum(w) + (w . l),
// exact in integers (the AVX2 path's sums, in another order); sum(w) is one more vpdpbusd
// against bytes of 1, shared by the input rows.

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

#endif

#if defined(__AVX512VNNI__)
// The 512-bit build packs its blocks as 16 outputs x 4 inputs ([kc/4][16][4], layout.py), so
// that each int32 lane is one output and every lane reads the same 4 inputs: the input row is
// a 4-byte broadcast (a plain load), where 4 outputs x 16 inputs needed a 16-byte broadcast to
// each 128-bit lane (a load and a shuffle, competing with vpdpbusd), and a lane's sum is its
// output's, with no horizontal adds. In a loop over weights in L2 this ran 16 rows ~2.4x
// faster.
constexpr int kBlockRows = 16, kBlockCols = 4;  // outputs x inputs of a packed block
constexpr int kRows = 8;  // input rows a strip serves at once: 16 sums + sum(w) in registers

// A strip: one 16-output block column over a chunk (16 x kc bytes, contiguous). A lane adds
// kc <= 1024 products per plane: |w . h| <= 1024 * 127 * 255 < 2^31, and
// w . h - 128 sum(w) = w . (q >> 8) =: a, so the lane's sum w . q = 256 a + w . l, exact in
// float64 and then rounded once.
// `ahead`: the prefetch distance in bytes, `Hint` the cache level it fills (product_blocks).
// sum_w: the strip's sum(w) per output, which the first pass over a strip adds up (Sum) and
// the later ones read (its rows take the same weights).
template <int M, int Hint, bool Sum>
inline void strip(const int16_t* x, int64_t ldx, const int8_t* w, int64_t kc, int64_t ahead,
                  __m512i& sum_w, __m512 sums[]) {
  const __m512i ones = _mm512_set1_epi8(1);
  const __m512i zero = _mm512_setzero_si512();
  __m512i s = Sum ? zero : sum_w, h[M], l[M];
#pragma GCC unroll 8
  for (int m = 0; m < M; ++m) h[m] = l[m] = zero;
  // Per 16 inputs, to_product_layout put their 16 h bytes, then their 16 l bytes.
  const char* xc = reinterpret_cast<const char*>(x);
  for (int64_t k = 0; k < kc; k += 16, w += 4 * 64, xc += 32) {
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      _mm_prefetch(reinterpret_cast<const char*>(w + 64 * j + ahead), static_cast<_mm_hint>(Hint));
      const __m512i wv = _mm512_loadu_si512(w + 64 * j);
      if constexpr (Sum) s = _mm512_dpbusd_epi32(s, ones, wv);
#pragma GCC unroll 8
      for (int m = 0; m < M; ++m) {
        const char* xb = xc + 2 * m * ldx + 4 * j;
        int32_t hb, lb;
        std::memcpy(&hb, xb, 4);
        std::memcpy(&lb, xb + 16, 4);
        h[m] = _mm512_dpbusd_epi32(h[m], _mm512_set1_epi32(hb), wv);
        l[m] = _mm512_dpbusd_epi32(l[m], _mm512_set1_epi32(lb), wv);
      }
    }
  }
  sum_w = s;
  const __m512i s128 = _mm512_slli_epi32(s, 7);
  const __m512d by256 = _mm512_set1_pd(256.0);
  auto exact = [&](__m256i a, __m256i b) {  // 256 a + b, rounded once
    return _mm512_cvtpd_ps(_mm512_fmadd_pd(_mm512_cvtepi32_pd(a), by256, _mm512_cvtepi32_pd(b)));
  };
#pragma GCC unroll 8
  for (int m = 0; m < M; ++m) {
    const __m512i a = _mm512_sub_epi32(h[m], s128);
    const __m256 lo = exact(_mm512_castsi512_si256(a), _mm512_castsi512_si256(l[m]));
    const __m256 hi = exact(_mm512_extracti64x4_epi64(a, 1), _mm512_extracti64x4_epi64(l[m], 1));
    sums[m] = _mm512_castpd_ps(_mm512_insertf64x4(
        _mm512_castpd256_pd512(_mm256_castps_pd(lo)), _mm256_castps_pd(hi), 1));
  }
}
#elif defined(__AVXVNNI__)
// The exact int32 lane sums w . q from the planes' lane sums. Per lane a chunk adds at most 256
// products: |w . q| <= 256 * 127 * 32767 < 2^31, and 256 (w . h) <= 2^31 - 2^25: no overflow.
inline __m256i combine(__m256i h, __m256i s, __m256i l) {
  return _mm256_add_epi32(_mm256_sub_epi32(_mm256_slli_epi32(h, 8), _mm256_slli_epi32(s, 15)), l);
}

constexpr int kBlockRows = 4, kBlockCols = 16;  // outputs x inputs of a packed block
constexpr int kRows = 2;  // input rows a block serves at once (16 registers)

// Adds (w . x) for 4 outputs and M (1 or 2) inputs over one chunk; the block is [kc/16][4][16]
// and a 256-bit register holds two outputs' 16 weights (rows 0-1, then rows 2-3), the 16
// inputs (h or l plane) broadcast to both 128-bit lanes.
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
  // Each output's 4 lanes are summed exactly: in pairs in int32 (|.| <= 2 * 256 * 127 * 32767
  // < 2^31), then in float64, and rounded once.
  for (int m = 0; m < M; ++m) {
    const __m256i a = combine(h[m][0], s[0], l[m][0]);  // outputs 0 | 1
    const __m256i b = combine(h[m][1], s[1], l[m][1]);  // outputs 2 | 3
    const __m256i t = _mm256_hadd_epi32(a, b);         // pairs of 0, 0, 2, 2 | 1, 1, 3, 3
    const __m256d lo = _mm256_cvtepi32_pd(_mm256_castsi256_si128(t));
    const __m256d hi = _mm256_cvtepi32_pd(_mm256_extracti128_si256(t, 1));
    sums[m] = _mm256_cvtpd_ps(_mm256_hadd_pd(lo, hi));  // 0, 1, 2, 3
  }
}
#else
// The AVX2 build reads the int16 inputs as they are.
inline void to_product_layout(int16_t*, int64_t) {}

constexpr int kBlockRows = 4, kBlockCols = 16;  // outputs x inputs of a packed block
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
  // Each output's 8 lanes are summed exactly: by fours in int32 (|.| <= 4 * 64 * 2 * 127 *
  // 32767 < 2^31), then in float64, and rounded once, as the VNNI builds round theirs.
  for (int m = 0; m < M; ++m) {
    const __m256i t = _mm256_hadd_epi32(_mm256_hadd_epi32(acc[m][0], acc[m][1]),
                                        _mm256_hadd_epi32(acc[m][2], acc[m][3]));  // 0-3 | 0-3
    const __m256d lo = _mm256_cvtepi32_pd(_mm256_castsi256_si128(t));
    const __m256d hi = _mm256_cvtepi32_pd(_mm256_extracti128_si256(t, 1));
    sums[m] = _mm256_cvtpd_ps(_mm256_add_pd(lo, hi));
  }
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

// Blocks b0..b1 (output columns kBlockRows b0 .. kBlockRows b1) of out [M, ldo] =
// epilogue((xq * xs) @ w.T * scales) for xq [M, K] int16 with row scales xs, w [N, K] packed
// in this build's blocks, [K/kc][N/kBlockRows][kc/kBlockCols][kBlockRows][kBlockCols].
// Sums over earlier K-chunks wait in acc [M, N], which may be `out` itself unless adding.
#if defined(__AVX512VNNI__)
template <int Hint, bool Sum>
inline void dispatch(int rows, const int16_t* x, int64_t ldx, const int8_t* w, int64_t kc,
                     int64_t ahead, __m512i& sum_w, __m512 sums[]) {
  switch (rows) {
    case 8: return strip<8, Hint, Sum>(x, ldx, w, kc, ahead, sum_w, sums);
    case 7: return strip<7, Hint, Sum>(x, ldx, w, kc, ahead, sum_w, sums);
    case 6: return strip<6, Hint, Sum>(x, ldx, w, kc, ahead, sum_w, sums);
    case 5: return strip<5, Hint, Sum>(x, ldx, w, kc, ahead, sum_w, sums);
    case 4: return strip<4, Hint, Sum>(x, ldx, w, kc, ahead, sum_w, sums);
    case 3: return strip<3, Hint, Sum>(x, ldx, w, kc, ahead, sum_w, sums);
    case 2: return strip<2, Hint, Sum>(x, ldx, w, kc, ahead, sum_w, sums);
    default: return strip<1, Hint, Sum>(x, ldx, w, kc, ahead, sum_w, sums);
  }
}

template <Epilogue E>
void product_blocks(const int8_t* w, const float* scales, int64_t N, int64_t K, int64_t kc,
                    const int16_t* xq, const float* xs, int64_t M, float* acc, float* out,
                    int64_t ldo, int64_t b0, int64_t b1) {
  const int64_t chunks = K / kc;
  for (int64_t c = 0; c < chunks; ++c)
    for (int64_t b = b0; b < b1; ++b) {
      const int8_t* wb = w + (c * (N / kBlockRows) + b) * kBlockRows * kc;
      __m512i sum_w;
      for (int64_t m = 0; m < M; m += kRows) {
        __m512 sums[kRows];
        const int rows = static_cast<int>(std::min<int64_t>(kRows, M - m));
        const int16_t* xb = xq + m * K + c * kc;
        // One pass streams the strip from memory, prefetching along it. With more rows the
        // later passes find it in L1, and the last one prefetches the next strip into L2:
        // else the first pass of each strip (8 rows, 17 vpdpbusd per 64 bytes) would ask
        // more of memory than one core gets, while the others ask nothing.
        if (m == 0) dispatch<_MM_HINT_T0, true>(rows, xb, K, wb, kc, kAhead, sum_w, sums);
        else if (m + kRows < M)
          dispatch<_MM_HINT_T0, false>(rows, xb, K, wb, kc, kAhead, sum_w, sums);
        else
          dispatch<_MM_HINT_T1, false>(rows, xb, K, wb, kc, kBlockRows * kc, sum_w, sums);
        for (int i = 0; i < rows; ++i) {
          const int64_t row = m + i;
          float* a = acc + row * N + kBlockRows * b;
          const __m512 part = _mm512_mul_ps(sums[i], _mm512_set1_ps(xs[row]));
          const __m512 v = c == 0 ? part : _mm512_add_ps(_mm512_loadu_ps(a), part);
          if (c < chunks - 1) {
            _mm512_storeu_ps(a, v);
            continue;
          }
          alignas(64) float done[16];
          _mm512_store_ps(done, _mm512_mul_ps(v, _mm512_loadu_ps(scales + kBlockRows * b)));
          float* o = out + row * ldo + kBlockRows * b;
          for (int q = 0; q < 16; q += 4) vecmath::finish<E>(o + q, _mm_load_ps(done + q));
        }
      }
    }
}
#else
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
#endif
}  // namespace int8k
