// One head's attention for one query over a float16, float32 or int8 KV cache: F16C (or
// int8) conversion, AVX2 + FMA arithmetic, float32 softmax and accumulation; an int8 cache's
// 64-wide heads take exact integer sums instead (int8_attention.h). An int8 cache has a scale
// per frame for its keys (ks) and its values (vs); the others pass none.
#pragma once
#include <ATen/ATen.h>

#include <type_traits>

#include "int8_attention.h"
#include "vector_math.h"

namespace attn {
using vecmath::exp8;

// Keys and values are read once a step, 64 values a frame: a (row, head) is a run of a few
// tens of KiB, too short for the hardware prefetcher to reach speed on each 4 KiB page, so
// each loop asks for the lines this far ahead itself.
constexpr int64_t kAheadFrames = 32;

template <typename T>
inline void prefetch_frame(const T* p) {  // one frame of 64 values: 128 or 256 bytes
  const char* c = reinterpret_cast<const char*>(p);
  for (size_t b = 0; b < 64 * sizeof(T); b += 64) _mm_prefetch(c + b, _MM_HINT_T0);
}
// Keys and values are int8 (the int8 decoder's cache), float16 (attend_one's) or float32 (the
// float32 decoder's).
inline __m256 load8(const at::Half* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const int8_t* p) {
  const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
}
template <typename T>
constexpr bool kScaled = std::is_same_v<T, int8_t>;  // a cache with a scale per frame

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

// Each key's dot product with a 64-wide query: lane i of 16 adds q[i + 16 d] k[i + 16 d] for
// d = 0..3 (a product, then three FMAs), and the key's 8-lane vector is lanes 0-7 plus lanes
// 8-15, here in two 8-lane halves.
template <typename T>
inline __m256 dot64(const __m256* qv, const T* kt) {
  __m256 lo = _mm256_mul_ps(qv[0], load8(kt)), hi = _mm256_mul_ps(qv[1], load8(kt + 8));
  for (int d = 1; d < 4; ++d) {
    lo = _mm256_fmadd_ps(qv[2 * d], load8(kt + 16 * d), lo);
    hi = _mm256_fmadd_ps(qv[2 * d + 1], load8(kt + 16 * d + 8), hi);
  }
  return _mm256_add_ps(lo, hi);
}

// Scores of 64-wide heads over a float cache, four keys at a time (independent FMA chains,
// one reduction). An int8 cache's 64-wide heads take int8_attention.h's integer sums.
// The next head's keys are prefetched (`next`, as int8_attention.h's loops take it).
template <typename T>
inline void scores64(const float* q, const T* k, const T* v, const float* mask, int64_t n,
                     int64_t next, float* s) {
  __m256 qv[8];
  for (int d = 0; d < 8; ++d) qv[d] = _mm256_loadu_ps(q + 8 * d);
  int64_t t = 0;
  for (; t + 4 <= n; t += 4) {
    const T* kt = k + t * 64;
    for (int j = 0; j < 4; ++j) {
      prefetch_frame(kt + (kAheadFrames + j) * 64);
      prefetch_frame(v + (t + j) * 64);  // the values, for the weighted sum right after
    }
    if (next > 0) vecmath::prefetch_next(kt + next * 64, 4 * sizeof(T));
    __m256 a[4];
    for (int j = 0; j < 4; ++j) a[j] = dot64(qv, kt + 64 * j);
    __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
    __m128 four = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    if (mask) four = _mm_add_ps(four, _mm_loadu_ps(mask + t));
    _mm_storeu_ps(s + t, four);
  }
  for (; t < n; ++t) s[t] = hsum(dot64(qv, k + t * 64)) + (mask ? mask[t] : 0.0f);
}

// out = sum_t p[t] v[t] for 64-wide heads over a float cache, the 64 sums held in registers;
// the next head's values prefetched (`next`).
template <typename T>
inline void weighted64(const float* p, const T* v, int64_t n, int64_t next, float* out) {
  __m256 o[8];
  for (int d = 0; d < 8; ++d) o[d] = _mm256_setzero_ps();
  for (int64_t t = 0; t < n; ++t) {
    prefetch_frame(v + (t + kAheadFrames) * 64);
    if (next > 0) vecmath::prefetch_next(v + (t + next) * 64, sizeof(T));
    const __m256 w = _mm256_set1_ps(p[t]);
    for (int d = 0; d < 8; ++d) o[d] = _mm256_fmadd_ps(w, load8(v + t * 64 + 8 * d), o[d]);
  }
  for (int d = 0; d < 8; ++d) _mm256_storeu_ps(out + 8 * d, o[d]);
}

// Softmax in place over s [n] (unnormalized: e^(s - max)); returns the sum.
inline float softmax(float* s, int64_t n) {
  const float top = vecmath::largest(s, n);
  __m256 total = _mm256_setzero_ps();
  int64_t t = 0;
  for (; t + 8 <= n; t += 8) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(s + t), _mm256_set1_ps(top)));
    _mm256_storeu_ps(s + t, e);
    total = _mm256_add_ps(total, e);
  }
  float sum = hsum(total);
  for (; t < n; ++t) {
    float tail[8] = {s[t] - top, -87.0f, -87.0f, -87.0f, -87.0f, -87.0f, -87.0f, -87.0f};
    _mm256_storeu_ps(tail, exp8(_mm256_loadu_ps(tail)));
    s[t] = tail[0];
    sum += tail[0];
  }
  return sum;
}

// One head: q [hd] (already scaled) against n keys/values [n, hd] -> out [hd]; ks, vs: the
// frames' scales of an int8 cache (else unread); planes: 2 n + 8 bytes of scratch, needed for
// an int8 cache's 64-wide heads (int8_attention.h; else unread). next: the frames from this
// head's cache to that of the head the caller attends next, which 64-wide heads prefetch
// meanwhile (0: none follows).
template <typename T>
inline void attend(const float* q, const T* k, const T* v, const float* ks, const float* vs,
                   const float* mask, int64_t n, int64_t hd, float* s, float* out,
                   uint8_t* planes = nullptr, int64_t next = 0) {
  if constexpr (kScaled<T>) {
    if (hd == 64) {
      int8attn::scores(q, k, ks, vs, mask, n, kAheadFrames, next, s);
      const float inv = 1.0f / softmax(s, n);
      int8attn::weighted(planes, int8attn::weight_planes(s, vs, n, s, planes), v, n,
                         kAheadFrames, next, out);
      for (int64_t d = 0; d < hd; ++d) out[d] *= inv;
      return;
    }
  }
  const int64_t hv = hd - hd % 8;
  const bool wide = !kScaled<T> && hd == 64;  // (an int8 cache's took the integer sums)
  if (wide) {
    if constexpr (!kScaled<T>) scores64(q, k, v, mask, n, next, s);
  } else for (int64_t t = 0; t < n; ++t) {
    const T* kt = k + t * hd;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int64_t d = 0;
    for (; d + 16 <= hv; d += 16) {
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), load8(kt + d), a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + d + 8), load8(kt + d + 8), a1);
    }
    for (; d < hv; d += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), load8(kt + d), a0);
    float dot = hsum(_mm256_add_ps(a0, a1));
    for (; d < hd; ++d) dot += q[d] * static_cast<float>(kt[d]);
    if constexpr (kScaled<T>) dot *= ks[t];
    s[t] = mask ? dot + mask[t] : dot;
  }
  const float sum = softmax(s, n);
  if (wide) {
    if constexpr (!kScaled<T>) weighted64(s, v, n, next, out);
  } else {
    for (int64_t d = 0; d < hd; ++d) out[d] = 0.0f;
  }
  for (int64_t t = 0; t < n && !wide; ++t) {
    const float w = kScaled<T> ? s[t] * vs[t] : s[t];
    const __m256 p = _mm256_set1_ps(w);
    const T* vt = v + t * hd;
    int64_t d = 0;
    for (; d < hv; d += 8)
      _mm256_storeu_ps(out + d, _mm256_fmadd_ps(p, load8(vt + d), _mm256_loadu_ps(out + d)));
    for (; d < hd; ++d) out[d] += w * static_cast<float>(vt[d]);
  }
  const float inv = 1.0f / sum;
  for (int64_t d = 0; d < hd; ++d) out[d] *= inv;
}

}  // namespace attn
