// The two slow parts of drawing a token from a few rows of logits, as torch computes them,
// without torch's per-call overhead: the top-k threshold (a selection, not a sort) and
// multinomial's one draw per row (torch.multinomial(p, 1) is argmax(p / q) for q ~ Exp(1),
// one q per element, drawn in memory order from the generator; torch draws each q with a log
// even where p is 0, which is most of a top-k filtered row).
#pragma once
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/DistributionsHelper.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <mutex>
#include <vector>

namespace sampling {

// A float's bits as an unsigned key in the same order (negatives reversed below positives).
inline uint32_t order_key(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// The k-th largest of x[0..v) (1 <= k <= v), by radix selection on the keys, a byte at a
// time from the top: four counting passes, no sort and few unpredictable branches.
inline float kth_largest(const float* x, int64_t v, int64_t k, uint32_t* keys) {
  for (int64_t i = 0; i < v; ++i) keys[i] = order_key(x[i]);
  uint32_t prefix = 0, mask = 0;
  int64_t need = k;
  for (int shift = 24; shift >= 0; shift -= 8) {
    int64_t counts[256] = {};
    for (int64_t i = 0; i < v; ++i)
      counts[(keys[i] >> shift) & 255u] += (keys[i] & mask) == prefix;
    uint32_t digit = 255;
    for (;; --digit) {
      if (counts[digit] >= need) break;
      need -= counts[digit];
    }
    prefix |= digit << shift;
    mask |= 255u << shift;
  }
  for (int64_t i = 0; i < v; ++i)
    if (keys[i] == prefix) return x[i];
  return x[0];  // unreachable: the prefix is some element's key
}

// Row by row: logits below the row's k-th largest become -inf (ties with it stay), as
// masked_fill(x < topk(x, k).values.min(), -inf) does. out may be x.
inline void top_k_filter(const float* x, int64_t rows, int64_t v, int64_t k, float* out) {
  std::vector<uint32_t> keys(v);
  for (int64_t r = 0; r < rows; ++r) {
    const float* in = x + r * v;
    const float kth = kth_largest(in, v, k, keys.data());
    for (int64_t i = 0; i < v; ++i)
      out[r * v + i] = in[i] < kth ? -std::numeric_limits<float>::infinity() : in[i];
  }
}

// The generator's Mersenne Twister, copied out and run in bulk: at::mt19937's own steps (its
// state refill every 624 numbers, its tempering) in loops the compiler vectorizes, where
// torch draws one number per call. `draw` puts the state back.
class BulkEngine {
 public:
  explicit BulkEngine(const at::mt19937& engine) : d_(engine.data()) {}

  // The next n outputs, as n calls of at::mt19937's operator() would give them.
  void fill(uint32_t* out, int64_t n) {
    while (n > 0) {
      if (d_.left_ == 1) {  // the next call would refill: refill, as at::mt19937 does
        refill();
        d_.left_ = N + 1;
        d_.next_ = 0;
      }
      const int64_t take = std::min<int64_t>(n, d_.left_ - 1);
      const uint32_t* src = d_.state_.data() + d_.next_;
      for (int64_t i = 0; i < take; ++i) {
        uint32_t y = src[i];
        y ^= (y >> 11);
        y ^= (y << 7) & 0x9d2c5680u;
        y ^= (y << 15) & 0xefc60000u;
        y ^= (y >> 18);
        out[i] = y;
      }
      d_.left_ -= static_cast<int>(take);
      d_.next_ += static_cast<uint32_t>(take);
      out += take;
      n -= take;
    }
  }

  at::mt19937 engine() const {
    at::mt19937 e;
    e.set_data(d_);
    return e;
  }

 private:
  static constexpr int N = 624, M = 397;
  static uint32_t twist(uint32_t u, uint32_t v) {
    const uint32_t mixed = (u & 0x80000000u) | (v & 0x7fffffffu);
    return (mixed >> 1) ^ ((v & 1u) ? 0x9908b0dfu : 0u);
  }
  void refill() {  // at::mt19937::next_state
    uint32_t* p = d_.state_.data();
    for (int j = 0; j < N - M; ++j) p[j] = p[j + M] ^ twist(p[j], p[j + 1]);
    for (int j = N - M; j < N - 1; ++j) p[j] = p[j + M - N] ^ twist(p[j], p[j + 1]);
    p[N - 1] = p[M - 1] ^ twist(p[N - 1], p[0]);
  }
  at::mt19937_data_pod d_;
};

// One index per row of p [rows, v] (non-negative, each row summing above 0), the index
// torch.multinomial(p, 1, generator=g) returns, leaving g where it leaves it: the same
// exponential draws (random64 from two 32-bit outputs, the first high; its 53 low bits as a
// uniform u; q = -log1p(-u) cast to float), p / q in float, the first largest (NaN, from
// 0 / 0 when u is 0, counts as largest, as in torch's argmax).
inline void draw(const float* p, int64_t rows, int64_t v, at::CPUGeneratorImpl* gen,
                 int64_t* out) {
  std::lock_guard<std::mutex> lock(gen->mutex_);
  BulkEngine bulk(gen->engine());
  std::vector<uint32_t> bits(2 * v);
  constexpr uint64_t kMask = (uint64_t{1} << 53) - 1;
  const double step = 1.0 / static_cast<double>(uint64_t{1} << 53);
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = p + r * v;
    bulk.fill(bits.data(), 2 * v);
    int64_t best = 0;
    float top = -std::numeric_limits<float>::infinity();
    for (int64_t i = 0; i < v; ++i) {
      const uint64_t x = ((uint64_t{bits[2 * i]} << 32) | bits[2 * i + 1]) & kMask;
      if (row[i] == 0.0f && x != 0) continue;  // 0 / q = 0: never above a p > 0
      const double u = static_cast<double>(x) * step * (1.0 - 0.0) + 0.0;  // uniform_real
      const auto q = static_cast<float>(at::transformation::exponential<double>(u, 1.0));
      const float ratio = row[i] / q;
      if (std::isnan(ratio)) {
        best = i;
        break;
      }
      if (ratio > top) {
        top = ratio;
        best = i;
      }
    }
    out[r] = best;
  }
  gen->set_engine(bulk.engine());
}

// logits [R, V] float32 -> [R, 1] int64: torch's logits / temperature (a float division by
// the temperature cast to float, as torch casts a scalar), then (0 < k < V) the top-k filter,
// torch's softmax (its own kernel, row by row: torch would split a few rows over threads),
// and torch.multinomial's draw.
inline at::Tensor sample_rows(const at::Tensor& logits, double temperature, int64_t k,
                              std::optional<at::Generator> generator) {
  TORCH_CHECK(logits.scalar_type() == at::kFloat && logits.dim() == 2, "sample: [R, V] float32");
  const int64_t rows = logits.size(0), v = logits.size(1);
  const at::Tensor x = logits.contiguous();
  auto scaled = at::empty_like(x);
  const float t = static_cast<float>(temperature);
  const float* xp = x.data_ptr<float>();
  float* sp = scaled.data_ptr<float>();
  for (int64_t i = 0; i < rows * v; ++i) sp[i] = xp[i] / t;
  if (0 < k && k < v) top_k_filter(sp, rows, v, k, sp);
  auto probs = at::empty_like(x);
  for (int64_t r = 0; r < rows; ++r) {
    at::Tensor row = probs[r];
    at::_softmax_out(row, scaled[r], 0, false);
  }
  auto* gen = at::get_generator_or_default<at::CPUGeneratorImpl>(
      generator, at::detail::getDefaultCPUGenerator());
  auto out = at::empty({rows, 1}, x.options().dtype(at::kLong));
  draw(probs.data_ptr<float>(), rows, v, gen, out.data_ptr<int64_t>());
  return out;
}
}  // namespace sampling
