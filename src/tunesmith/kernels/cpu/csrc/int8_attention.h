// Attention over an int8 KV cache with 64-wide heads, in exact integer sums.
//
// The query and the softmax weights (times the values' frame scales) are rounded to 15 bits,
// one scale per head, so that a key's dot product and each output's weighted sum of values
// are integers, exact in int32 and float64. Every build adds the same integers in its own
// order and rounds them once, so all give the same floats. The 512-bit build adds them with
// VNNI: vpdpwssd (32 int16 products a call) for the keys, and vpdpbusd on the weights' two
// byte planes for the values (64 products a call), where float32 took a widening, a
// conversion and an FMA for every 16 values. Over 100 frames of 256 heads on a Zen 4 core
// this ran ~1.4x faster than float32 sums; over 500 frames, read from memory, the same.
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "vector_math.h"

namespace int8attn {
using vecmath::hmax;
using vecmath::largest;

// The int16 range the query and the weights are rounded to.
constexpr float kTop = 32767.0f;
// Frames summed in int32 by the AVX2 values loop before it moves its sums to float64: two
// products a lane of at most 32767 x 128 each, 128 times: < 2^31.
constexpr int64_t kFlush = 256;

// A thread attends its heads one after another, and one head's keys and values are runs of a
// few KiB in memory: prefetching only ahead within a head leaves the memory idle while a head
// starts and while its softmax runs (~11 GB/s a thread on a Zen 4 VM whose streaming sum read
// ~30). So each loop also asks for the next head's frames at the same place: `next`, the
// frames from one head's cache to the next one's (its T in [rows, H, T, 64]), or 0 when no
// head follows.
using vecmath::prefetch_next;

inline int32_t hsum(__m256i v) {  // exact: integers
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  return _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1)));
}

// q [64] -> qi [64] int16 with q ~ qi * (the returned scale), |qi| <= 32767.
inline float quantize_query(const float* q, int16_t* qi) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 top = _mm256_setzero_ps();
  for (int d = 0; d < 64; d += 8)
    top = _mm256_max_ps(top, _mm256_andnot_ps(sign, _mm256_loadu_ps(q + d)));
  const float t = hmax(top);
  const float scale = t > 0.0f ? t / kTop : 1.0f;
  const __m256 inv = _mm256_set1_ps(1.0f / scale);
  for (int d = 0; d < 64; d += 16) {
    const __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(q + d), inv));
    const __m256i b = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(q + d + 8), inv));
    // packs works within 128-bit halves: put the 64-bit quarters back in order.
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(qi + d),
                        _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xD8));
  }
  return scale;
}

// 8 int32 lanes that sum to qi . k, one frame (AVX2).
inline __m256i dot_lanes(const int16_t* qi, const int8_t* k) {
  __m256i a = _mm256_setzero_si256();
  for (int d = 0; d < 64; d += 16) {
    const __m128i kb = _mm_loadu_si128(reinterpret_cast<const __m128i*>(k + d));
    const __m256i qv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qi + d));
    a = _mm256_add_epi32(a, _mm256_madd_epi16(qv, _mm256_cvtepi8_epi16(kb)));
  }
  return a;
}

// s[t] = (float(qi . k_t) * scale) * ks[t] (+ mask[t]) for frames t0 <= t < t1, AVX2; the
// next head's keys and scales prefetched (`next`, `prefetch_next`).
inline void scores_avx2(const int16_t* qi, float scale, const int8_t* k, const float* ks,
                        const float* vs, const float* mask, int64_t t0, int64_t t1,
                        int64_t next, float* s) {
  int64_t t = t0;
  for (; t + 4 <= t1; t += 4) {
    const int8_t* kt = k + t * 64;
    if (next > 0) {
      prefetch_next(kt + next * 64, 4);
      if (t % 16 == 0) {
        prefetch_next(ks + t + next, 1);
        prefetch_next(vs + t + next, 1);
      }
    }
    const __m256i h01 = _mm256_hadd_epi32(dot_lanes(qi, kt), dot_lanes(qi, kt + 64));
    const __m256i h23 = _mm256_hadd_epi32(dot_lanes(qi, kt + 128), dot_lanes(qi, kt + 192));
    const __m256i h = _mm256_hadd_epi32(h01, h23);
    const __m128i four = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
    __m128 v = _mm_mul_ps(_mm_mul_ps(_mm_cvtepi32_ps(four), _mm_set1_ps(scale)),
                          _mm_loadu_ps(ks + t));
    if (mask) v = _mm_add_ps(v, _mm_loadu_ps(mask + t));
    _mm_storeu_ps(s + t, v);
  }
  for (; t < t1; ++t) {
    const float dot = static_cast<float>(hsum(dot_lanes(qi, k + t * 64)));
    const float x = dot * scale * ks[t];
    s[t] = mask ? x + mask[t] : x;
  }
}

#if defined(__AVX512VNNI__)
// 16 int32 lanes that sum to qi . k, one frame: two vpdpwssd on the widened keys.
inline __m512i dot_lanes(__m512i q0, __m512i q1, const int8_t* k) {
  const __m512i k0 = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(k)));
  const __m512i k1 =
      _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(k + 32)));
  return _mm512_dpwssd_epi32(_mm512_madd_epi16(q0, k0), q1, k1);
}

// Per 128-bit lane: a's and b's pairs of dwords added (a0+a2, b0+b2, a1+a3, b1+b3).
inline __m512i pairs(__m512i a, __m512i b) {
  return _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
}
// Per 128-bit lane: the 4-dword sums of the four frames that `pairs` paired as (a, b), (c, d).
inline __m512i fours(__m512i ab, __m512i cd) {
  return _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
}
// The 128-bit lanes of x and y added in pairs: x01, x23, y01, y23.
inline __m512i lanes(__m512i x, __m512i y) {
  return _mm512_add_epi32(_mm512_shuffle_i32x4(x, y, _MM_SHUFFLE(2, 0, 2, 0)),
                          _mm512_shuffle_i32x4(x, y, _MM_SHUFFLE(3, 1, 3, 1)));
}
#endif

// Scores of the n keys k [n, 64] (int8, frame scales ks) for the query q [64], already scaled;
// `ahead`: frames of keys prefetched ahead; the next head's keys and both its scales
// prefetched (`next`; vs: this head's value scales).
inline void scores(const float* q, const int8_t* k, const float* ks, const float* vs,
                   const float* mask, int64_t n, int64_t ahead, int64_t next, float* s) {
  alignas(64) int16_t qi[64];
  const float scale = quantize_query(q, qi);
  int64_t t = 0;
#if defined(__AVX512VNNI__)
  const __m512i q0 = _mm512_load_si512(qi), q1 = _mm512_load_si512(qi + 32);
  for (; t + 16 <= n; t += 16) {
    const int8_t* kt = k + t * 64;
    for (int j = 0; j < 16; ++j)
      _mm_prefetch(reinterpret_cast<const char*>(kt + (ahead + j) * 64), _MM_HINT_T0);
    if (next > 0) {
      prefetch_next(kt + next * 64, 16);
      prefetch_next(ks + t + next, 1);
      prefetch_next(vs + t + next, 1);
    }
    __m512i f[4];
    for (int g = 0; g < 4; ++g) {
      const int8_t* kg = kt + 256 * g;
      f[g] = fours(pairs(dot_lanes(q0, q1, kg), dot_lanes(q0, q1, kg + 64)),
                   pairs(dot_lanes(q0, q1, kg + 128), dot_lanes(q0, q1, kg + 192)));
    }
    const __m512i dots = lanes(lanes(f[0], f[1]), lanes(f[2], f[3]));  // frames t .. t + 15
    __m512 x = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(dots), _mm512_set1_ps(scale)),
                             _mm512_loadu_ps(ks + t));
    if (mask) x = _mm512_add_ps(x, _mm512_loadu_ps(mask + t));
    _mm512_storeu_ps(s + t, x);
  }
#endif
  scores_avx2(qi, scale, k, ks, vs, mask, t, n, next, s);
}

// The weights' byte planes: per 4 frames, their 4 high bytes (w >> 8, 0..127), then their 4
// low bytes (w & 255), for w = round(p[t] vs[t] / scale) in 0..32767; frames past n weigh 0.
// Returns the scale. w (which may be p) receives p[t] vs[t]; planes: 8 bytes for every 4
// frames, rounded up (2 n + 8 bytes hold them).
inline float weight_planes(const float* p, const float* vs, int64_t n, float* w,
                           uint8_t* planes) {
  for (int64_t t = 0; t < n; ++t) w[t] = p[t] * vs[t];
  const float top = largest(w, n);
  const float scale = top > 0.0f ? top / kTop : 1.0f;
  const float inv = 1.0f / scale;
  const __m256 by = _mm256_set1_ps(inv);
  const __m256i low = _mm256_set1_epi32(255);
  // 8 frames at a time: 2 groups of (4 high bytes, 4 low bytes); the last ones beside zeros.
  for (int64_t t = 0; t < n; t += 8) {
    alignas(32) float part[8] = {};
    const float* wt = w + t;
    if (t + 8 > n) {
      std::memcpy(part, wt, (n - t) * sizeof(float));
      wt = part;
    }
    const __m256i r = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(wt), by));
    // Per 128-bit lane: 4 high halves, then 4 low (16 bits each), then as bytes.
    const __m256i hl = _mm256_packus_epi32(_mm256_srli_epi32(r, 8), _mm256_and_si256(r, low));
    const __m256i bytes = _mm256_packus_epi16(hl, _mm256_setzero_si256());
    uint8_t* g = planes + 2 * t;
    _mm_storel_epi64(reinterpret_cast<__m128i*>(g), _mm256_castsi256_si128(bytes));
    if (t + 4 < n)
      _mm_storel_epi64(reinterpret_cast<__m128i*>(g + 8), _mm256_extracti128_si256(bytes, 1));
  }
  return scale;
}

// out[d] = float(sum_t w_t v_t[d]) * scale for the weights' planes and the n values v [n, 64];
// the next head's values prefetched (`next`).
inline void weighted(const uint8_t* planes, float scale, const int8_t* v, int64_t n,
                     int64_t ahead, int64_t next, float* out) {
  alignas(64) double exact[64];
#if defined(__AVX512VNNI__)
  __m512i hs[4], ls[4];
  for (int j = 0; j < 4; ++j) hs[j] = ls[j] = _mm512_setzero_si512();
  // One group of 4 frames: their bytes interleaved so that each int32 lane holds one output's
  // 4 values (lane i of e[j], 128-bit lane L: output 16 L + 4 j + i), then one vpdpbusd per
  // plane and register. Lane sums: |sum h v| <= n 127 128, |sum l v| <= n 255 128: int32.
  auto group = [&](const int8_t* vg, const uint8_t* pg) {
    const __m512i f0 = _mm512_loadu_si512(vg), f1 = _mm512_loadu_si512(vg + 64);
    const __m512i f2 = _mm512_loadu_si512(vg + 128), f3 = _mm512_loadu_si512(vg + 192);
    const __m512i a = _mm512_unpacklo_epi8(f0, f1), b = _mm512_unpackhi_epi8(f0, f1);
    const __m512i c = _mm512_unpacklo_epi8(f2, f3), d = _mm512_unpackhi_epi8(f2, f3);
    const __m512i e[4] = {_mm512_unpacklo_epi16(a, c), _mm512_unpackhi_epi16(a, c),
                          _mm512_unpacklo_epi16(b, d), _mm512_unpackhi_epi16(b, d)};
    int32_t hb, lb;
    std::memcpy(&hb, pg, 4);
    std::memcpy(&lb, pg + 4, 4);
    const __m512i h = _mm512_set1_epi32(hb), l = _mm512_set1_epi32(lb);
    for (int j = 0; j < 4; ++j) {
      hs[j] = _mm512_dpbusd_epi32(hs[j], h, e[j]);
      ls[j] = _mm512_dpbusd_epi32(ls[j], l, e[j]);
    }
  };
  int64_t g = 0;
  for (; 4 * g + 4 <= n; ++g) {
    for (int j = 0; j < 4; ++j)
      _mm_prefetch(reinterpret_cast<const char*>(v + (4 * g + ahead + j) * 64), _MM_HINT_T0);
    if (next > 0) prefetch_next(v + (4 * g + next) * 64, 4);
    group(v + 4 * g * 64, planes + 8 * g);
  }
  if (4 * g < n) {  // the last frames, beside zeros (their weights are 0)
    alignas(64) int8_t last[256] = {};
    std::memcpy(last, v + 4 * g * 64, (n - 4 * g) * 64);
    group(last, planes + 8 * g);
  }
  const __m512d by256 = _mm512_set1_pd(256.0);
  auto exact8 = [&](__m256i h, __m256i l) {  // 256 h + l in float64: exact (< 2^53)
    return _mm512_fmadd_pd(_mm512_cvtepi32_pd(h), by256, _mm512_cvtepi32_pd(l));
  };
  for (int j = 0; j < 4; ++j) {
    alignas(64) double lane[16];
    _mm512_store_pd(lane, exact8(_mm512_castsi512_si256(hs[j]), _mm512_castsi512_si256(ls[j])));
    _mm512_store_pd(lane + 8, exact8(_mm512_extracti64x4_epi64(hs[j], 1),
                                     _mm512_extracti64x4_epi64(ls[j], 1)));
    for (int i = 0; i < 16; ++i) exact[16 * (i / 4) + 4 * j + i % 4] = lane[i];
  }
#else
  // Two frames at a time: vpmaddwd on (w_t, w_t+1) x (v_t[d], v_t+1[d]) as int16 pairs, in
  // int32 for kFlush frames, then added to float64 (exact: integers below 2^53).
  for (int d = 0; d < 64; ++d) exact[d] = 0.0;
  __m256i acc[8];
  int64_t t = 0;
  auto flush = [&]() {
    // acc[2 c] holds outputs 16 c + {0-3, 8-11}, acc[2 c + 1] outputs 16 c + {4-7, 12-15}.
    for (int c = 0; c < 4; ++c)
      for (int half = 0; half < 2; ++half) {
        alignas(32) int32_t lane[8];
        _mm256_store_si256(reinterpret_cast<__m256i*>(lane), acc[2 * c + half]);
        for (int i = 0; i < 8; ++i) exact[16 * c + 4 * half + i % 4 + 8 * (i / 4)] += lane[i];
        acc[2 * c + half] = _mm256_setzero_si256();
      }
  };
  for (auto& a : acc) a = _mm256_setzero_si256();
  auto weight = [&](int64_t u) -> int32_t {  // frame u's weight, 0 past n
    if (u >= n) return 0;
    const uint8_t* pg = planes + 8 * (u / 4) + u % 4;
    return 256 * pg[0] + pg[4];
  };
  const int8_t zeros[64] = {};
  for (int64_t since = 0; t < n; t += 2) {
    const int32_t pair = (weight(t) & 0xFFFF) | (weight(t + 1) << 16);
    const __m256i wp = _mm256_set1_epi32(pair);
    const int8_t* v0 = v + t * 64;
    const int8_t* v1 = t + 1 < n ? v0 + 64 : zeros;
    _mm_prefetch(reinterpret_cast<const char*>(v0 + ahead * 64), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(v0 + (ahead + 1) * 64), _MM_HINT_T0);
    if (next > 0) prefetch_next(v0 + next * 64, 2);
    for (int c = 0; c < 4; ++c) {
      const __m256i a =
          _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(v0 + 16 * c)));
      const __m256i b =
          _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(v1 + 16 * c)));
      acc[2 * c] = _mm256_add_epi32(acc[2 * c], _mm256_madd_epi16(_mm256_unpacklo_epi16(a, b), wp));
      acc[2 * c + 1] =
          _mm256_add_epi32(acc[2 * c + 1], _mm256_madd_epi16(_mm256_unpackhi_epi16(a, b), wp));
    }
    if ((since += 2) >= kFlush) {
      flush();
      since = 0;
    }
  }
  flush();
#endif
  for (int d = 0; d < 64; ++d) out[d] = static_cast<float>(exact[d]) * scale;
}
}  // namespace int8attn
