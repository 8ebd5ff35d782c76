// The two slow parts of drawing a token from a few rows of logits, as torch computes them,
// without torch's per-call overhead: the top-k threshold (a selection, not a sort) and
// multinomial's one draw per row (torch.multinomial(p, 1) is argmax(p / q) for q ~ Exp(1),
// one q per element, drawn in memory order from the generator; torch draws each q with a log
// even where p is 0, which is most of a top-k filtered row).
#pragma once
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/DistributionsHelper.h>
#include <ATen/ops/_softmax_cpu_dispatch.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <mutex>
#include <vector>

#include "block_sweep.h"

namespace sampling {

// A float's bits as an unsigned key in the same order (negatives reversed below positives).
inline uint32_t order_key(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// The k-th largest of x[0..v) (1 <= k <= v), by radix selection on the keys, a byte at a
// time from the top: a counting pass over all keys for the top byte, then the same passes
// over only the keys that share the bytes chosen so far (no sort, few unpredictable
// branches). keys holds v values.
inline float kth_largest(const float* x, int64_t v, int64_t k, uint32_t* keys) {
  for (int64_t i = 0; i < v; ++i) keys[i] = order_key(x[i]);
  int64_t n = v, need = k;
  uint32_t prefix = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    int64_t counts[256] = {};
    for (int64_t i = 0; i < n; ++i) ++counts[(keys[i] >> shift) & 255u];
    uint32_t digit = 255;
    for (;; --digit) {
      if (counts[digit] >= need) break;
      need -= counts[digit];
    }
    prefix |= digit << shift;
    // Keep the keys with this digit (in place, branch-free): the next byte chooses among them.
    int64_t kept = 0;
    for (int64_t i = 0; i < n; ++i) {
      keys[kept] = keys[i];
      kept += ((keys[i] >> shift) & 255u) == digit;
    }
    n = kept;
  }
  // The prefix is now the whole key of the k-th largest: back to its float.
  const uint32_t u = (prefix & 0x80000000u) ? (prefix & 0x7fffffffu) : ~prefix;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// One row x of v: logits below its k-th largest become -inf (ties with it stay), as
// masked_fill(x < topk(x, k).values.min(), -inf) does. out may be x; keys: scratch of v.
inline void top_k_row(const float* x, int64_t v, int64_t k, uint32_t* keys, float* out) {
  const float kth = kth_largest(x, v, k, keys);
  constexpr float kNone = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < v; ++i) out[i] = x[i] < kth ? kNone : x[i];
}

// `top_k_row` on each row of x [rows, v].
inline void top_k_filter(const float* x, int64_t rows, int64_t v, int64_t k, float* out) {
  std::vector<uint32_t> keys(v);
  for (int64_t r = 0; r < rows; ++r) top_k_row(x + r * v, v, k, keys.data(), out + r * v);
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

// The uniform u that torch makes of two 32-bit outputs (random64, the first high; its 53 low
// bits): as the integer x (u = x / 2^53).
inline uint64_t uniform_bits(const uint32_t* bits, int64_t i) {
  constexpr uint64_t kMask = (uint64_t{1} << 53) - 1;
  return ((uint64_t{bits[2 * i]} << 32) | bits[2 * i + 1]) & kMask;
}

// torch's exponential variate for x: q = -log1p(-u) in double, cast to float.
inline float exponential_of(uint64_t x) {
  const double step = 1.0 / static_cast<double>(uint64_t{1} << 53);
  const double u = static_cast<double>(x) * step * (1.0 - 0.0) + 0.0;  // uniform_real
  return static_cast<float>(at::transformation::exponential<double>(u, 1.0));
}

// argmax over i in `order` (ascending) of row[i] / q_i, the first largest, NaN counting as
// largest (torch's argmax). Where `prune`, an entry whose ratio cannot beat the best so far
// is skipped without its logarithm: q = -log1p(-u) >= u, so row[i] / q <= row[i] / u, and
// with float roundings (q's within 2^-24 of a < 1 ulp log1p, the division's 2^-24) the
// ratio is below (row[i] / u) (1 + 1.3e-7). An entry whose bound, with a 4e-6 margin, is
// under the best cannot be above it or equal to it. It needs u > 0 (x != 0).
inline int64_t best_ratio(const float* row, const uint32_t* bits, const int64_t* order,
                          int64_t n, bool prune) {
  const double step = 1.0 / static_cast<double>(uint64_t{1} << 53);
  int64_t best = 0;
  float top = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < n; ++j) {
    const int64_t i = order[j];
    const uint64_t x = uniform_bits(bits, i);
    if (prune && x != 0 &&
        static_cast<double>(row[i]) / (static_cast<double>(x) * step) * (1.0 + 4e-6) < top)
      continue;
    const float ratio = row[i] / exponential_of(x);
    if (std::isnan(ratio)) return i;
    if (ratio > top) {
      top = ratio;
      best = i;
    }
  }
  return best;
}

// The generator's next 2 v outputs for each of `rows` rows, in the order torch draws them
// (one row's exponentials after another's), into bits [rows, 2 v]; g moves past them.
inline void fill_bits(at::CPUGeneratorImpl* gen, int64_t rows, int64_t v, uint32_t* bits) {
  std::lock_guard<std::mutex> lock(gen->mutex_);
  BulkEngine bulk(gen->engine());
  bulk.fill(bits, 2 * rows * v);
  gen->set_engine(bulk.engine());
}

// The index torch.multinomial(p, 1) returns for one row p of v probabilities (non-negative,
// summing above 0) drawn with `bits` (`fill_bits`'s row): the same exponential draws
// (`uniform_bits`, `exponential_of`), p / q in float, the first largest (NaN, from 0 / 0
// when u is 0, counts as largest, as in torch's argmax). A zero p with u > 0 gives 0, never
// above a positive ratio: only the positive entries are visited, most of them without a
// logarithm (`best_ratio`); a row where a zero p meets u = 0 (one chance in 2^53 an entry)
// takes every entry, as torch does. order: scratch of v.
inline int64_t draw_row(const float* p, int64_t v, const uint32_t* bits, int64_t* order) {
  int64_t n = 0;
  bool nan_zero = false;
  for (int64_t i = 0; i < v; ++i) {  // branch-free: the positive entries, in order
    order[n] = i;
    n += p[i] != 0.0f;
    nan_zero |= (p[i] == 0.0f) & (uniform_bits(bits, i) == 0);
  }
  if (nan_zero) {
    for (int64_t i = 0; i < v; ++i) order[i] = i;
    n = v;
  }
  return best_ratio(p, bits, order, n, !nan_zero);
}

// One index per row of p [rows, v], as `draw_row` draws them, the generator's outputs taken
// row after row.
inline void draw(const float* p, int64_t rows, int64_t v, at::CPUGeneratorImpl* gen,
                 int64_t* out) {
  std::vector<uint32_t> bits(2 * rows * v);
  fill_bits(gen, rows, v, bits.data());
  std::vector<int64_t> order(v);
  for (int64_t r = 0; r < rows; ++r)
    out[r] = draw_row(p + r * v, v, bits.data() + 2 * r * v, order.data());
}

// How a row of logits becomes a token: divided by the temperature, top-k (0 < k < V), then
// torch's softmax and multinomial draw.
struct Settings {
  float temperature;
  int64_t top_k;
};

// Scratch for one thread's rows (v values each).
struct RowScratch {
  explicit RowScratch(int64_t v) : scaled(v), probs(v), keys(v), order(v) {}
  std::vector<float> scaled, probs;
  std::vector<uint32_t> keys;
  std::vector<int64_t> order;
};

// One row x of v logits -> its token, drawn with `fill_bits`'s row of bits: torch's
// x / temperature (a float division by the temperature cast to float, as torch casts a
// scalar), the top-k filter, torch's softmax kernel (called past the dispatcher, on one
// row: torch would split a few rows over threads) and multinomial's draw.
inline int64_t sample_row(const float* x, int64_t v, const Settings& settings,
                          const uint32_t* bits, RowScratch& scratch) {
  float* scaled = scratch.scaled.data();
  for (int64_t i = 0; i < v; ++i) scaled[i] = x[i] / settings.temperature;
  if (0 < settings.top_k && settings.top_k < v)
    top_k_row(scaled, v, settings.top_k, scratch.keys.data(), scaled);
  const auto options = at::TensorOptions().dtype(at::kFloat);
  at::Tensor in = at::from_blob(scaled, {v}, options);
  at::Tensor out = at::from_blob(scratch.probs.data(), {v}, options);
  at::cpu::_softmax_out(out, in, 0, false);
  return draw_row(scratch.probs.data(), v, bits, scratch.order.data());
}

inline at::CPUGeneratorImpl* cpu_generator(const std::optional<at::Generator>& generator) {
  return at::get_generator_or_default<at::CPUGeneratorImpl>(
      generator, at::detail::getDefaultCPUGenerator());
}

// Tokens for the rows of x [rows, v] (`sample_row`), by the calling team of threads: every
// thread of a parallel region calls it (or one thread, outside any), once x is complete. The
// first thread takes the generator's outputs for all rows, in order, into bits [rows, 2 v];
// then each thread draws its own share of the rows into tokens.
inline void sample_in_team(const float* x, int64_t rows, int64_t v, const Settings& settings,
                           at::CPUGeneratorImpl* gen, uint32_t* bits, int64_t* tokens) {
#pragma omp master
  fill_bits(gen, rows, v, bits);
#pragma omp barrier
  const int t = omp_get_thread_num(), nt = omp_get_num_threads();
  const int64_t lo = rows * t / nt, hi = rows * (t + 1) / nt;
  if (lo >= hi) return;
  RowScratch scratch(v);
  for (int64_t r = lo; r < hi; ++r)
    tokens[r] = sample_row(x + r * v, v, settings, bits + 2 * r * v, scratch);
}

// logits [R, V] float32 -> [R, 1] int64: `sample_in_team` on `threads` threads (at most
// torch's count).
inline at::Tensor sample_rows(const at::Tensor& logits, double temperature, int64_t k,
                              std::optional<at::Generator> generator, int64_t threads) {
  TORCH_CHECK(logits.scalar_type() == at::kFloat && logits.dim() == 2, "sample: [R, V] float32");
  const int64_t rows = logits.size(0), v = logits.size(1);
  const at::Tensor x = logits.contiguous();
  std::vector<uint32_t> bits(2 * rows * v);
  auto out = at::empty({rows, 1}, x.options().dtype(at::kLong));
  const Settings settings{static_cast<float>(temperature), k};
  at::CPUGeneratorImpl* gen = cpu_generator(generator);
  const int n = vecmath::team_size(threads);
#pragma omp parallel num_threads(n)
  sample_in_team(x.data_ptr<float>(), rows, v, settings, gen, bits.data(), out.data_ptr<int64_t>());
  return out;
}
}  // namespace sampling
