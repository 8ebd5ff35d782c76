// The walk over the packed weight layout [K/kc][N/4][kc/16][4][16] that the matrix kernels
// share: threads split the N/4 blocks, K-chunk by K-chunk, and each block serves the input rows
// a few at a time while it is in L1. `block(c, b, m, rows, sums)` fills sums[0..rows) with the 4
// outputs of block b over chunk c for rows m..; `store(c, b, row, sums)` writes them.
// `sweep_blocks` is one thread's share (blocks b0..b1); `parallel_blocks` splits them over
// torch's threads (the one-product ops; decoder.h splits them over its own parallel region).
#pragma once
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

#include "vector_math.h"

namespace vecmath {
// Always inlined into its caller (a product, then the decoder step): left to the compiler,
// whether it is depends on the order of the translation unit, and an out-of-line copy of
// fc1's float32 product made the whole step ~5% slower. G: the input rows a block serves at
// once (the block kernel's registers hold G rows' sums).
template <int G, typename Block, typename Store>
[[gnu::always_inline]] inline void sweep_blocks(int64_t b0, int64_t b1, int64_t M, int64_t chunks,
                                                const Block& block, const Store& store) {
  for (int64_t c = 0; c < chunks; ++c)
    for (int64_t b = b0; b < b1; ++b)
      for (int64_t m = 0; m < M; m += G) {
        __m128 sums[G];
        const int rows = M - m >= G ? G : static_cast<int>(M - m);
        block(c, b, m, rows, sums);
        for (int i = 0; i < rows; ++i) store(c, b, m + i, sums[i]);
      }
}

// What a product does with its finished outputs s: out = s, out = GELU(s), or out += s.
enum class Epilogue { Store, Gelu, Add };

template <Epilogue E>
inline void finish(float* out, __m128 s) {
  if constexpr (E == Epilogue::Gelu) _mm_storeu_ps(out, gelu4(s));
  else if constexpr (E == Epilogue::Add) _mm_storeu_ps(out, _mm_add_ps(_mm_loadu_ps(out), s));
  else _mm_storeu_ps(out, s);
}

// The threads a parallel region of ours takes: `threads`, at least 1, at most torch's count
// (1 inside another parallel region).
inline int team_size(int64_t threads) {
  const int most = at::in_parallel_region() ? 1 : at::get_num_threads();
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, most)));
}

// Splits a product's N / rows output blocks (`rows` outputs each) over torch's threads:
// f(b0, b1) on each share, of at least 32 outputs.
template <typename F>
inline void parallel_blocks(int64_t N, int64_t rows, const F& f) {
  at::parallel_for(0, N / rows, std::max<int64_t>(1, 32 / rows), f);
}
}  // namespace vecmath
