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
#include <functional>
#include <limits>
#include <mutex>
#include <vector>

namespace sampling {
// Row by row: logits below the row's k-th largest become -inf (ties with it stay), as
// masked_fill(x < topk(x, k).values.min(), -inf) does.
inline void top_k_filter(const float* x, int64_t rows, int64_t v, int64_t k, float* out) {
  std::vector<float> row(v);
  for (int64_t r = 0; r < rows; ++r) {
    const float* in = x + r * v;
    std::copy(in, in + v, row.begin());
    std::nth_element(row.begin(), row.begin() + (k - 1), row.end(), std::greater<float>());
    const float kth = row[k - 1];
    for (int64_t i = 0; i < v; ++i)
      out[r * v + i] = in[i] < kth ? -std::numeric_limits<float>::infinity() : in[i];
  }
}

// One index per row of p [rows, v] (non-negative, each row summing above 0), the index
// torch.multinomial(p, 1, generator=g) returns, leaving g where it leaves it: the same
// exponential draws (at::exponential_distribution<double> over the uniform from random64,
// cast to float), p / q in float, the first largest (NaN, from 0 / 0, counts as largest, as
// in torch's argmax).
inline void draw(const float* p, int64_t rows, int64_t v, at::CPUGeneratorImpl* gen,
                 int64_t* out) {
  std::lock_guard<std::mutex> lock(gen->mutex_);
  const at::uniform_real_distribution<double> uniform(0.0, 1.0);
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = p + r * v;
    int64_t best = 0;
    float top = -std::numeric_limits<float>::infinity();
    bool nan = false;
    for (int64_t i = 0; i < v; ++i) {
      const double u = uniform(gen);
      if (nan || (row[i] == 0.0f && u != 0.0)) continue;  // 0 / q = 0: never above a p > 0
      const auto q = static_cast<float>(at::transformation::exponential<double>(u, 1.0));
      const float ratio = row[i] / q;
      if (std::isnan(ratio)) {
        best = i;
        nan = true;
      } else if (ratio > top) {
        top = ratio;
        best = i;
      }
    }
    out[r] = best;
  }
}
}  // namespace sampling
