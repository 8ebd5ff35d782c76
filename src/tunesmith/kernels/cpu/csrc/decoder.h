// A decoder's whole one-frame step on a CPU, in one OpenMP parallel region.
//
// Every layer's norms, products, attention and residual adds, then the final norm and the K
// heads: the threads split each product's output blocks and the attention heads, and meet at
// a barrier between dependent stages, so a step costs its weights' reading time plus a few
// hundred barriers. The arithmetic is the module-by-module path's: the same products
// (int8_product.h, fp32_product.h), the same one-query attention (head_attention.h),
// LayerNorm in float32 (two passes: mean, then variance), GELU as the int8 kernel computes it,
// keys and values rounded to float16 as torch rounds them (int8 decoders' caches).
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "fp32_product.h"
#include "head_attention.h"
#include "int8_product.h"
#include "row_parts.h"
#include "sampling.h"

namespace step {
using vecmath::Epilogue;

// A packed weight [n, k]: int8 with a float32 scale per output, or float32 (no scales).
struct Linear {
  const void* w = nullptr;
  const float* scales = nullptr;
  int64_t n = 0, k = 0, kc = 0;
};

struct Layer {
  Norm self_norm, cross_norm, ffn_norm;
  Linear qkv, out, cross_q, cross_out, fc1, fc2;
};

// The decoder's weights, as pointers into the tensors it was made from (the caller's, alive
// for the call): all int8 (activations rounded to int16 row by row for the products), or all
// float32.
class Decoder {
 public:
  // tensors: per layer, in order, self-attention norm (weight, bias), qkv (packed, scales),
  // out, cross-attention norm, cross q, cross out (if `cross`: melody decoders have none),
  // feed-forward norm, fc1, fc2; then the final norm and each head. Float32 weights come
  // with empty scales; last, each codebook's embedding table [rows, D] float32. dims: each
  // product's (outputs, K-chunk), in the same order. sizes: (layers, heads, codebooks, cross).
  Decoder(at::TensorList tensors, at::IntArrayRef dims, at::IntArrayRef sizes, double eps)
      : eps_(static_cast<float>(eps)) {
    TORCH_CHECK(sizes.size() == 4, "step: sizes are (layers, heads, codebooks, cross)");
    const int64_t layers = sizes[0], codebooks = sizes[2];
    heads_ = sizes[1];
    cross_ = sizes[3] != 0;
    const int64_t products = layers * (cross_ ? 6 : 4) + codebooks;
    TORCH_CHECK(static_cast<int64_t>(tensors.size()) == layers * (cross_ ? 18 : 12) + 2 + 3 * codebooks,
                "step: wrong number of tensors");
    TORCH_CHECK(static_cast<int64_t>(dims.size()) == 2 * products, "step: wrong number of dims");
    int8_ = tensors[2].scalar_type() == at::kChar;
    size_t at = 0, product = 0;
    auto norm = [&]() {
      Norm n{vec(tensors[at]), vec(tensors[at + 1])};
      at += 2;
      return n;
    };
    auto linear = [&]() {
      const at::Tensor& w = tensors[at];
      TORCH_CHECK(w.scalar_type() == (int8_ ? at::kChar : at::kFloat) && w.is_contiguous(),
                  "step: packed weights, all int8 or all float32");
      Linear l{w.data_ptr(), int8_ ? vec(tensors[at + 1]) : nullptr, dims[2 * product],
               0, dims[2 * product + 1]};
      ++product;
      l.k = l.n > 0 ? w.numel() / l.n : 0;
      TORCH_CHECK(l.n > 0 && l.n * l.k == w.numel() && l.n % block_rows() == 0 &&
                  l.kc % 16 == 0 && l.kc <= 1024 && l.k % l.kc == 0,
                  "step: a product's shape does not fit the kernel");
      TORCH_CHECK(!int8_ || tensors[at + 1].numel() == l.n, "step: one scale per output");
      at += 2;
      return l;
    };
    for (int64_t i = 0; i < layers; ++i) {
      Layer l;
      l.self_norm = norm();
      l.qkv = linear();
      l.out = linear();
      if (cross_) {
        l.cross_norm = norm();
        l.cross_q = linear();
        l.cross_out = linear();
      }
      l.ffn_norm = norm();
      l.fc1 = linear();
      l.fc2 = linear();
      layers_.push_back(l);
    }
    final_ = norm();
    for (int64_t k = 0; k < codebooks; ++k) lm_heads_.push_back(linear());
    for (int64_t k = 0; k < codebooks; ++k, ++at) {
      const at::Tensor& table = tensors[at];
      TORCH_CHECK(table.scalar_type() == at::kFloat && table.is_contiguous() && table.dim() == 2,
                  "step: embedding tables must be contiguous [rows, D] float32");
      tables_.push_back(table.data_ptr<float>());
      table_rows_.push_back(table.size(0));
      TORCH_CHECK(table.size(1) == layers_[0].out.n, "step: an embedding table of the wrong width");
    }
    const Layer& first = layers_[0];
    dim_ = first.out.n;
    ffn_ = first.fc1.n;
    vocab_ = lm_heads_[0].n;
    TORCH_CHECK(dim_ % heads_ == 0, "step: heads do not divide the width");
    for (const Layer& l : layers_)
      TORCH_CHECK(l.qkv.n == 3 * dim_ && l.qkv.k == dim_ && l.out.k == dim_ &&
                  l.out.n == dim_ && l.fc1.k == dim_ && l.fc1.n == ffn_ && l.fc2.k == ffn_ &&
                  l.fc2.n == dim_ &&
                  (!cross_ || (l.cross_q.n == dim_ && l.cross_q.k == dim_ &&
                               l.cross_out.n == dim_ && l.cross_out.k == dim_)),
                  "step: layers of different shapes");
    for (const Linear& h : lm_heads_)
      TORCH_CHECK(h.k == dim_ && h.n == vocab_, "step: heads of different shapes");
  }

  // tokens [B, K, 1] int64 (any strides): each row's codes of the frame `rows` places it at,
  // embedded here as the model embeds them (each codebook's row, summed in codebook order,
  // then the row's position's row of `positions` [T', D] float32 added); kv: per layer self
  // keys, self values [slots, H, T, hd], cross keys, cross values [texts, H, S, hd], all
  // float16 or all float32, or self keys and values int8 (cross float16) followed by their
  // scales [slots, H, T] float32; mask: empty or [texts, S] additive float32 (a text row's).
  // The first rows.with_text() rows attend to text. -> logits [B, codebooks, vocab] float32.
  // Writes each row's frame's keys and values. threads: at most this many (and at most
  // torch's count) share the step. guided: the rows are a guided batch (conditional rows
  // first), and the result is its guided logits [B/2, codebooks, vocab], uncond + scale (cond
  // - uncond) rounded as torch rounds it, each thread mixing the columns it computed. With
  // `settings`, the result is instead the tokens drawn from those logits [rows, codebooks]
  // int64 (`sampling::sample_row`, the generator's outputs taken row after row), each
  // thread drawing its own rows.
  at::Tensor step(const at::Tensor& tokens, const at::Tensor& positions, const Rows& rows,
                  at::TensorList kv, const at::Tensor& mask, int64_t threads, bool guided,
                  double scale, const sampling::Settings* settings = nullptr,
                  at::CPUGeneratorImpl* gen = nullptr) const {
    const int64_t L = layers_.size();
    const at::ScalarType type = kv[0].scalar_type();
    TORCH_CHECK(type == at::kChar || type == at::kHalf || type == at::kFloat,
                "step: an int8, float16 or float32 cache");
    TORCH_CHECK(static_cast<int64_t>(kv.size()) == (type == at::kChar ? 6 : 4) * L,
                "step: 4 cache tensors a layer (6 with int8 keys and values)");
    const int n = vecmath::team_size(threads);
    const at::Tensor x = embed(tokens, positions, rows.position);
    TORCH_CHECK(!guided || x.size(0) % 2 == 0, "step: a guided batch has an even number of rows");
    const float s = static_cast<float>(scale);
    TORCH_CHECK(settings == nullptr || gen != nullptr, "step: drawing needs a generator");
    if (type == at::kChar)
      return run<int8_t, at::Half>(x, rows, kv, mask, n, guided, s, settings, gen);
    if (type == at::kHalf)
      return run<at::Half, at::Half>(x, rows, kv, mask, n, guided, s, settings, gen);
    return run<float, float>(x, rows, kv, mask, n, guided, s, settings, gen);
  }

  // The step's input rows [B, D]: (((0 + e_0) + e_1) + ...) + positions[position[b]], the
  // model's `embed` and position add with torch's roundings (signed zeros included).
  at::Tensor embed(const at::Tensor& tokens, const at::Tensor& positions,
                   const std::vector<int64_t>& position) const {
    const int64_t K = tables_.size(), D = dim_;
    TORCH_CHECK(tokens.scalar_type() == at::kLong && tokens.dim() == 3 && tokens.size(1) == K &&
                tokens.size(2) == 1, "step: tokens must be [B, codebooks, 1] int64");
    TORCH_CHECK(positions.scalar_type() == at::kFloat && positions.is_contiguous() &&
                positions.dim() == 2 && positions.size(1) == D,
                "step: positions must be contiguous [frames, D] float32");
    const int64_t B = tokens.size(0), s0 = tokens.stride(0), s1 = tokens.stride(1);
    TORCH_CHECK(static_cast<int64_t>(position.size()) == B, "step: a position for every row");
    for (int64_t p : position)
      TORCH_CHECK(0 <= p && p < positions.size(0), "step: position past the positions");
    const int64_t* tp = tokens.data_ptr<int64_t>();
    at::Tensor x = at::empty({B, D}, positions.options());
    float* xp = x.data_ptr<float>();
    for (int64_t b = 0; b < B; ++b) {
      const float* pos = positions.data_ptr<float>() + position[b] * D;
      float* row = xp + b * D;
      std::fill(row, row + D, 0.0f);
      for (int64_t k = 0; k < K; ++k) {
        const int64_t token = tp[b * s0 + k * s1];
        TORCH_CHECK(0 <= token && token < table_rows_[k], "step: token ", token,
                    " outside codebook ", k, "'s embedding table");
        const float* e = tables_[k] + token * D;
        for (int64_t d = 0; d < D; ++d) row[d] += e[d];
      }
      for (int64_t d = 0; d < D; ++d) row[d] += pos[d];
    }
    return x;
  }

 private:
  // SelfKV: the self-attention cache's type (int8 with a scale per frame and head, float16 or
  // float32); CrossKV: the cross-attention keys and values' (float16 or float32).
  template <typename SelfKV, typename CrossKV>
  at::Tensor run(const at::Tensor& x_in, const Rows& where, at::TensorList kv,
                 const at::Tensor& mask, int threads, bool guided, float guidance,
                 const sampling::Settings* settings, at::CPUGeneratorImpl* gen) const {
    const int64_t D = dim_, H = heads_, hd = dim_ / heads_, L = layers_.size();
    TORCH_CHECK(x_in.dim() == 2 && x_in.size(1) == D && x_in.scalar_type() == at::kFloat,
                "step: x must be [B, D] float32");
    const int64_t B = x_in.size(0), N = where.with_text();
    TORCH_CHECK(where.rows() == B && N <= B && (cross_ || N == 0), "step: rows out of range");
    // Cache rows (slots) of T frames each; text rows of S words each.
    const int64_t R = kv[0].size(0), T = kv[0].size(2), texts = kv[2].size(0), S = kv[2].size(2);
    where.check(R, T, N > 0 ? texts : 0, S);
    constexpr bool scaled = attn::kScaled<SelfKV>;
    const int64_t per_layer = scaled ? 6 : 4;
    for (int64_t i = 0; i < 4 * L; ++i) {
      const at::Tensor& t = kv[per_layer * (i / 4) + i % 4];
      const bool self = i % 4 < 2;
      if (!self && N == 0) continue;  // not read
      TORCH_CHECK(t.scalar_type() == (self ? c10::CppTypeToScalarType<SelfKV>::value
                                           : c10::CppTypeToScalarType<CrossKV>::value) &&
                      t.is_contiguous() && t.dim() == 4,
                  "step: the cache must be contiguous [rows, H, frames, hd], self-attention's "
                  "of one dtype, cross-attention's of another");
      TORCH_CHECK(t.size(0) == (self ? R : texts) && t.size(1) == H && t.size(2) == (self ? T : S) &&
                  t.size(3) == hd, "step: a cache tensor of the wrong shape");
    }
    for (int64_t i = 0; scaled && i < 2 * L; ++i) {
      const at::Tensor& t = kv[6 * (i / 2) + 4 + i % 2];
      TORCH_CHECK(t.scalar_type() == at::kFloat && t.is_contiguous() && t.dim() == 3 &&
                      t.size(0) == R && t.size(1) == H && t.size(2) == T,
                  "step: an int8 cache's scales must be contiguous [rows, H, frames] float32");
    }
    const bool masked = mask.numel() > 0;
    if (masked)
      TORCH_CHECK(mask.scalar_type() == at::kFloat && mask.is_contiguous() && mask.dim() == 2 &&
                  mask.size(0) == texts && mask.size(1) == S, "step: mask must be [texts, S]");

    at::Tensor x = x_in;  // the residual stream (embed's own rows), updated in place
    const auto opts = x.options();
    const int64_t K = lm_heads_.size();
    at::Tensor logits = at::empty({B, K, vocab_}, opts);
    const int64_t half = guided ? B / 2 : 0;
    at::Tensor mixed = at::empty({half, K, vocab_}, opts);
    float* mp_out = mixed.data_ptr<float>();
    // The draw's rows (each codebook of each row the logits end with) and their random bits.
    const int64_t drawn_rows = (guided ? half : B) * K;
    const float* final_logits = guided ? mixed.data_ptr<float>() : logits.data_ptr<float>();
    at::Tensor tokens = at::empty({settings ? drawn_rows : 0}, opts.dtype(at::kLong));
    std::vector<uint32_t> bits(settings ? 2 * drawn_rows * vocab_ : 0);
    const int64_t wide = std::max(D, ffn_);
    at::Tensor hq_t = at::empty({int8_ ? B * wide : 0}, opts.dtype(at::kShort));
    at::Tensor hf_t = at::empty({int8_ ? 0 : B * D}, opts);  // normed rows (float32 weights)
    at::Tensor hs_t = at::empty({B}, opts);
    at::Tensor acc_t = at::empty({B * std::max({3 * D, ffn_, vocab_ * K})}, opts);
    at::Tensor qkv_t = at::empty({B * 3 * D}, opts), att_t = at::empty({B * D}, opts);
    at::Tensor ffn_t = at::empty({B * ffn_}, opts);
    float* xp = x.data_ptr<float>();
    int16_t* hq = hq_t.data_ptr<int16_t>();
    float* hf = hf_t.data_ptr<float>();
    float* hs = hs_t.data_ptr<float>();
    float* acc = acc_t.data_ptr<float>();
    float* qkv = qkv_t.data_ptr<float>();
    float* att = att_t.data_ptr<float>();
    float* ffn = ffn_t.data_ptr<float>();
    float* out = logits.data_ptr<float>();
    const float* mp = masked ? mask.data_ptr<float>() : nullptr;
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    const int64_t block_rows = this->block_rows();
    const int64_t most = where.most_frames();  // the most frames a row attends to
    const int64_t* position = where.position.data();
    const int64_t* slot = where.slot.data();
    const int64_t* text = where.text.data();
    const int64_t* words = where.words.data();
    // From one (row, head)'s frames (or words) to those of the next one a thread attends:
    // what the attention prefetches meanwhile (0: none follows, or it lies before).
    auto ahead = [](int64_t from, int64_t to, int64_t frames) -> int64_t {
      return std::max<int64_t>(0, (to - from) * frames);
    };

#pragma omp parallel num_threads(threads)
    {
      const int nt = omp_get_num_threads(), t = omp_get_thread_num();
      std::vector<float> row(wide), scores(std::max(most, S)), qs(hd);
      std::vector<uint8_t> planes(scaled ? 2 * most + 8 : 0);  // an int8 cache's weights
      const float* act = nullptr;  // the next product's float32 input rows
      int64_t lo, hi;
      // Rows of `src` ([rows, width]) made ready for the next product, this thread's share:
      // normed (if `norm`), then rounded to int16 (int8 weights); then a barrier.
      auto prepare = [&](const float* src, int64_t rows, int64_t width, const Norm* norm) {
        share(rows, t, nt, lo, hi);
        act = norm != nullptr ? hf : src;
        for (int64_t r = lo; r < hi; ++r) {
          const float* v = src + r * width;
          if (norm != nullptr) {
            float* y = int8_ ? row.data() : hf + r * width;
            layer_norm(v, width, *norm, eps_, y);
            v = y;
          }
          if (int8_) {
            int8k::quantize_rows16(v, 1, width, hq + r * width, hs + r);
            int8k::to_product_layout(hq + r * width, width);
          }
        }
#pragma omp barrier
      };
      // This thread's output blocks of a product of the prepared rows, then (if `wait`) a
      // barrier.
      auto product = [&](const Linear& l, int64_t rows, float* dst, int64_t ldo, Epilogue e,
                         float* partial, bool wait) {
        share(l.n / block_rows, t, nt, lo, hi);
        auto blocks = [&](auto epilogue) {  // the epilogue as a compile-time constant
          constexpr Epilogue E = decltype(epilogue)::value;
          if (int8_)
            int8k::product_blocks<E>(static_cast<const int8_t*>(l.w), l.scales, l.n, l.k, l.kc,
                                     hq, hs, rows, partial, dst, ldo, lo, hi);
          else
            f32k::product_blocks<E>(static_cast<const float*>(l.w), l.n, l.k, l.kc, act, rows,
                                    partial, dst, ldo, lo, hi);
        };
        if (e == Epilogue::Add) blocks(std::integral_constant<Epilogue, Epilogue::Add>{});
        else if (e == Epilogue::Gelu) blocks(std::integral_constant<Epilogue, Epilogue::Gelu>{});
        else blocks(std::integral_constant<Epilogue, Epilogue::Store>{});
        if (wait) {
#pragma omp barrier
        }
      };

      for (int64_t i = 0; i < L; ++i) {
        const Layer& l = layers_[i];
        const int64_t at = per_layer * i;
        SelfKV* self_k = kv[at].data_ptr<SelfKV>();
        SelfKV* self_v = kv[at + 1].data_ptr<SelfKV>();
        const CrossKV* cross_k = N > 0 ? kv[at + 2].data_ptr<CrossKV>() : nullptr;
        const CrossKV* cross_v = N > 0 ? kv[at + 3].data_ptr<CrossKV>() : nullptr;
        float* k_scales = scaled ? kv[at + 4].data_ptr<float>() : nullptr;
        float* v_scales = scaled ? kv[at + 5].data_ptr<float>() : nullptr;

        // Self-attention: each (row, head) writes its key and value, then attends.
        prepare(xp, B, D, &l.self_norm);
        product(l.qkv, B, qkv, 3 * D, Epilogue::Store, acc, true);
        share(B * H, t, nt, lo, hi);
        for (int64_t bh = lo; bh < hi; ++bh) {
          const int64_t b = bh / H, h = bh % H, p = position[b];
          const float* q = qkv + b * 3 * D + h * hd;
          const int64_t head = slot[b] * H + h;  // this (row, head)'s place in the cache
          const int64_t base = head * T * hd;
          float* ks = scaled ? k_scales + head * T : nullptr;  // this head's frame scales
          float* vs = scaled ? v_scales + head * T : nullptr;
          if constexpr (scaled) {
            store(q + D, hd, self_k + base + p * hd, ks + p);
            store(q + 2 * D, hd, self_v + base + p * hd, vs + p);
          } else {
            store(q + D, hd, self_k + base + p * hd);
            store(q + 2 * D, hd, self_v + base + p * hd);
          }
          for (int64_t d = 0; d < hd; ++d) qs[d] = q[d] * scale;
          const int64_t next =
              bh + 1 < hi ? ahead(head, slot[(bh + 1) / H] * H + (bh + 1) % H, T) : 0;
          attn::attend(qs.data(), self_k + base, self_v + base, ks, vs, nullptr, p + 1, hd,
                       scores.data(), att + b * D + h * hd, planes.data(), next);
        }
#pragma omp barrier
        prepare(att, B, D, nullptr);
        product(l.out, B, xp, D, Epilogue::Add, acc, true);

        // Cross-attention to the text, for the rows that have text.
        if (N > 0) {
          prepare(xp, N, D, &l.cross_norm);
          product(l.cross_q, N, qkv, D, Epilogue::Store, acc, true);
          share(N * H, t, nt, lo, hi);
          for (int64_t bh = lo; bh < hi; ++bh) {
            const int64_t b = bh / H, h = bh % H, head = text[b] * H + h;
            for (int64_t d = 0; d < hd; ++d) qs[d] = qkv[b * D + h * hd + d] * scale;
            const int64_t next =
                bh + 1 < hi ? ahead(head, text[(bh + 1) / H] * H + (bh + 1) % H, S) : 0;
            attn::attend(qs.data(), cross_k + head * S * hd, cross_v + head * S * hd, nullptr,
                         nullptr, mp ? mp + text[b] * S : nullptr, words[b], hd, scores.data(),
                         att + b * D + h * hd, nullptr, next);
          }
#pragma omp barrier
          prepare(att, N, D, nullptr);
          product(l.cross_out, N, xp, D, Epilogue::Add, acc, true);
        }

        // Feed-forward, GELU applied as fc1's outputs are finished.
        prepare(xp, B, D, &l.ffn_norm);
        product(l.fc1, B, ffn, ffn_, Epilogue::Gelu, acc, true);
        prepare(ffn, B, ffn_, nullptr);
        product(l.fc2, B, xp, D, Epilogue::Add, acc, true);
      }

      // The final norm and the heads (independent: no barrier between them).
      prepare(xp, B, D, &final_);
      for (int64_t k = 0; k < K; ++k)
        product(lm_heads_[k], B, out + k * vocab_, K * vocab_, Epilogue::Store,
                acc + k * B * vocab_, false);
      // Guidance on this thread's own columns, while they are in its cache (no barrier):
      // torch's uncond + scale * (cond - uncond), one rounding per operation.
      if (half > 0) {
        share(vocab_ / block_rows, t, nt, lo, hi);  // the heads' own split
        const __m128 sv = _mm_set1_ps(guidance);
        for (int64_t b = 0; b < half; ++b)
          for (int64_t k = 0; k < K; ++k) {
            const float* c = out + (b * K + k) * vocab_;
            const float* u = out + ((b + half) * K + k) * vocab_;
            float* g = mp_out + (b * K + k) * vocab_;
            for (int64_t j = block_rows * lo; j < block_rows * hi; j += 4) {
              const __m128 uv = _mm_loadu_ps(u + j);
              const __m128 d = _mm_mul_ps(sv, _mm_sub_ps(_mm_loadu_ps(c + j), uv));
              _mm_storeu_ps(g + j, _mm_add_ps(uv, d));
            }
          }
      }
      // The tokens, once every row's logits are final (`sampling::sample_in_team`).
      if (settings != nullptr) {
#pragma omp barrier
        sampling::sample_in_team(final_logits, drawn_rows, vocab_, *settings, gen, bits.data(),
                                 tokens.data_ptr<int64_t>());
      }
    }
    if (settings != nullptr) return tokens.view({drawn_rows / K, K});
    return guided ? mixed : logits;
  }

  // Outputs per packed block: the threads split each product by whole blocks.
  int64_t block_rows() const { return int8_ ? int8k::kBlockRows : 4; }

  static const float* vec(const at::Tensor& t) {
    TORCH_CHECK(t.scalar_type() == at::kFloat && t.is_contiguous() && t.dim() == 1,
                "step: norms and scales must be float32 vectors");
    return t.data_ptr<float>();
  }

  std::vector<Layer> layers_;
  std::vector<Linear> lm_heads_;
  std::vector<const float*> tables_;  // each codebook's embedding rows
  std::vector<int64_t> table_rows_;
  Norm final_;
  int64_t heads_ = 0, dim_ = 0, ffn_ = 0, vocab_ = 0;
  bool cross_ = true;  // layers with cross-attention
  bool int8_ = true;   // int8 weights (else float32)
  float eps_;
};
}  // namespace step
