// The parts of a decoder step that each row does on its own: where the row lies in the cache
// (`Rows`), its LayerNorms and its cache writes. Nothing here reads another row, so a row's
// numbers do not depend on the rows beside it (decoder.h's products do not either: each
// input row has its own sums, added in the same order whatever the batch).
#pragma once
#include <ATen/ATen.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "head_attention.h"

namespace step {

struct Norm {
  const float* w = nullptr;
  const float* b = nullptr;
};

// Where each row of a step lies. Row b embeds its frame at position[b] (row position[b] of
// the positional table), writes its keys and values there in cache row slot[b], and attends
// to that row's frames 0..position[b]; the first N rows (those with text) also attend to the
// first words[b] keys of text row text[b]. Rows of one batch may stand at any positions: each
// row's attention reads only its own frames and words.
struct Rows {
  std::vector<int64_t> position, slot, text, words;

  // Every row of a batch of B at `frame`, in cache rows 0..B-1; the first N attending to
  // text rows 0..N-1, all S words of each (the one-position step).
  static Rows same(int64_t B, int64_t frame, int64_t N, int64_t S) {
    Rows r;
    r.position.assign(B, frame);
    for (int64_t b = 0; b < B; ++b) r.slot.push_back(b);
    for (int64_t b = 0; b < N; ++b) r.text.push_back(b);
    r.words.assign(N, S);
    return r;
  }

  // From int64 tensors [B] (positions, slots) and [N] (text rows, words).
  static Rows of(const at::Tensor& position, const at::Tensor& slot, const at::Tensor& text,
                 const at::Tensor& words) {
    Rows r;
    r.position = values(position);
    r.slot = values(slot);
    r.text = values(text);
    r.words = values(words);
    TORCH_CHECK(r.position.size() == r.slot.size() && r.text.size() == r.words.size(),
                "step: a position and a slot for every row, a text row and words for every "
                "row with text");
    return r;
  }

  int64_t rows() const { return static_cast<int64_t>(position.size()); }
  int64_t with_text() const { return static_cast<int64_t>(text.size()); }
  int64_t most_frames() const {  // the most frames a row attends to
    return position.empty() ? 0 : *std::max_element(position.begin(), position.end()) + 1;
  }

  // Checks them against a cache of `slots` rows of `frames` frames and a text store of
  // `texts` rows of `capacity` words.
  void check(int64_t slots, int64_t frames, int64_t texts, int64_t capacity) const {
    std::vector<bool> taken(slots, false);
    for (int64_t b = 0; b < rows(); ++b) {
      TORCH_CHECK(0 <= position[b] && position[b] < frames,
                  "step: row ", b, "'s position ", position[b], " is past the cache");
      TORCH_CHECK(0 <= slot[b] && slot[b] < slots && !taken[slot[b]], "step: row ", b,
                  "'s cache row ", slot[b], " is out of range or taken by another row");
      taken[slot[b]] = true;
    }
    for (int64_t b = 0; b < with_text(); ++b)
      TORCH_CHECK(0 <= text[b] && text[b] < texts && 1 <= words[b] && words[b] <= capacity,
                  "step: row ", b, "'s text (row ", text[b], ", ", words[b],
                  " words) is out of range");
  }

 private:
  static std::vector<int64_t> values(const at::Tensor& t) {
    TORCH_CHECK(t.scalar_type() == at::kLong && t.dim() == 1, "step: rows as int64 vectors");
    const at::Tensor c = t.contiguous();
    return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
  }
};

// Items lo..hi of n that thread t of `threads` takes (contiguous, sizes within one).
inline void share(int64_t n, int t, int threads, int64_t& lo, int64_t& hi) {
  lo = n * t / threads;
  hi = n * (t + 1) / threads;
}

// y = LayerNorm(x) over d values (mean, then the variance around it, in float32).
inline void layer_norm(const float* x, int64_t d, const Norm& norm, float eps, float* y) {
  __m256 s = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= d; i += 8) s = _mm256_add_ps(s, _mm256_loadu_ps(x + i));
  float sum = attn::hsum(s);
  for (; i < d; ++i) sum += x[i];
  const float mean = sum / static_cast<float>(d);
  const __m256 mv = _mm256_set1_ps(mean);
  s = _mm256_setzero_ps();
  for (i = 0; i + 8 <= d; i += 8) {
    const __m256 c = _mm256_sub_ps(_mm256_loadu_ps(x + i), mv);
    s = _mm256_fmadd_ps(c, c, s);
  }
  float sq = attn::hsum(s);
  for (; i < d; ++i) sq += (x[i] - mean) * (x[i] - mean);
  const float rstd = 1.0f / std::sqrt(sq / static_cast<float>(d) + eps);
  const __m256 rv = _mm256_set1_ps(rstd);
  for (i = 0; i + 8 <= d; i += 8) {
    const __m256 c = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv), rv);
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(c, _mm256_loadu_ps(norm.w + i),
                                            _mm256_loadu_ps(norm.b + i)));
  }
  for (; i < d; ++i) y[i] = (x[i] - mean) * rstd * norm.w[i] + norm.b[i];
}

// A cache write: float32 -> float16 rounding to nearest even (as torch's conversion does),
// or a copy.
inline void store(const float* x, int64_t n, at::Half* y) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; ++i) y[i] = static_cast<at::Half>(x[i]);
}
inline void store(const float* x, int64_t n, float* y) { std::copy(x, x + n, y); }

// An int8 cache write: one frame of one head, q = round(x * 127 / max|x|) (to nearest even),
// and its scale max|x| / 127: the same float32 operations as `models.kv_int8.quantize`.
inline void store(const float* x, int64_t n, int8_t* y, float* scale) {
  float top = 0.0f;
  for (int64_t i = 0; i < n; ++i) top = std::max(top, std::fabs(x[i]));
  const float inv = top > 0.0f ? 127.0f / top : 0.0f;
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<int8_t>(std::nearbyint(x[i] * inv));
  *scale = top / 127.0f;
}

}  // namespace step
