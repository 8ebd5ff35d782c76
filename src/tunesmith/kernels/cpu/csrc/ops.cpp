// tunesmith's CPU ops: the torch bindings of the kernels in the headers beside this file,
// compiled as one extension (one translation unit: most of a build is reading torch's headers).
// Each op checks its inputs and calls the kernel; every op is registered below, in one place,
// under the namespace the build names (TS_NAMESPACE: one per instruction set, see isa.py).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "decoder.h"
#include "fp32_product.h"
#include "head_attention.h"
#include "int8_product.h"
#include "sampling.h"

namespace {
// out [M, N] = (x [M, K] @ w.T) * scales (then GELU if `gelu`), w packed in this build's int8
// blocks (`int8_block`).
at::Tensor int8_linear(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales,
                       int64_t kc, bool gelu) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous());
  TORCH_CHECK(packed.scalar_type() == at::kChar && packed.is_contiguous());
  TORCH_CHECK(scales.dim() == 1 && scales.scalar_type() == at::kFloat && scales.is_contiguous());
  const int64_t M = x.size(0), K = x.size(1), N = scales.size(0);
  TORCH_CHECK(packed.numel() == N * K && N % int8k::kBlockRows == 0 && kc % 16 == 0 &&
              K % kc == 0);
  TORCH_CHECK(kc <= 1024, "int8 kernel: chunks of at most 1024 inputs (int32 sums)");
  auto out = at::empty({M, N}, x.options());
  auto xq = at::empty({M, K}, x.options().dtype(at::kShort));
  auto xs = at::empty({M}, x.options());
  int8k::quantize_rows16(x.data_ptr<float>(), M, K, xq.data_ptr<int16_t>(), xs.data_ptr<float>());
  int8k::to_product_layout(xq.data_ptr<int16_t>(), M * K);
  const int16_t* xp = xq.data_ptr<int16_t>();
  const float* xsp = xs.data_ptr<float>();
  const int8_t* wp = packed.data_ptr<int8_t>();
  const float* sp = scales.data_ptr<float>();
  float* op = out.data_ptr<float>();
  vecmath::parallel_blocks(N, int8k::kBlockRows, [&](int64_t b0, int64_t b1) {
    if (gelu)
      int8k::product_blocks<int8k::Epilogue::Gelu>(wp, sp, N, K, kc, xp, xsp, M, op, op, N, b0, b1);
    else
      int8k::product_blocks<int8k::Epilogue::Store>(wp, sp, N, K, kc, xp, xsp, M, op, op, N, b0, b1);
  });
  return out;
}

// out [M, N] = x [M, K] @ w.T, w packed as [K/kc][N/4][kc/16][4][16].
at::Tensor fp32_linear(const at::Tensor& x, const at::Tensor& packed, int64_t n, int64_t kc) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous());
  TORCH_CHECK(packed.scalar_type() == at::kFloat && packed.is_contiguous());
  const int64_t M = x.size(0), K = x.size(1), N = n;
  TORCH_CHECK(packed.numel() == N * K && N % 4 == 0 && kc % 16 == 0 && K % kc == 0);
  auto out = at::empty({M, N}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* wp = packed.data_ptr<float>();
  float* op = out.data_ptr<float>();
  vecmath::parallel_blocks(N, 4, [&](int64_t b0, int64_t b1) {
    f32k::product_blocks<vecmath::Epilogue::Store>(wp, N, K, kc, xp, M, op, op, N, b0, b1);
  });
  return out;
}

// q [B, H, 1, hd] float32; k, v [B, H, T, hd] float16, or int8 with scales k_scale, v_scale
// [B, H, T] float32 (the int8 decoder's cache; else empty); only the first n frames are read.
// mask: empty or [B, n] additive float32. -> [B, H, 1, hd] float32.
at::Tensor attend_one(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                      int64_t n, const at::Tensor& mask, const at::Tensor& k_scale,
                      const at::Tensor& v_scale) {
  TORCH_CHECK(q.dim() == 4 && q.size(2) == 1 && q.scalar_type() == at::kFloat);
  const bool int8 = k.scalar_type() == at::kChar;
  TORCH_CHECK(k.scalar_type() == (int8 ? at::kChar : at::kHalf) &&
              v.scalar_type() == k.scalar_type(), "attend_one: a float16 or an int8 cache");
  TORCH_CHECK(k.is_contiguous() && v.is_contiguous() && k.sizes() == v.sizes());
  const int64_t B = q.size(0), H = q.size(1), hd = q.size(3), T = k.size(2);
  TORCH_CHECK(k.size(0) == B && k.size(1) == H && k.size(3) == hd && n >= 1 && n <= T);
  if (int8) {
    for (const at::Tensor* scales : {&k_scale, &v_scale})
      TORCH_CHECK(scales->scalar_type() == at::kFloat && scales->is_contiguous() &&
                      scales->sizes() == k.sizes().slice(0, 3),
                  "attend_one: an int8 cache needs float32 scales [B, H, T]");
  }
  const bool masked = mask.numel() > 0;
  if (masked) {
    TORCH_CHECK(mask.scalar_type() == at::kFloat && mask.is_contiguous());
    TORCH_CHECK(mask.dim() == 2 && mask.size(0) == B && mask.size(1) == n);
  }
  const at::Tensor qc = q.contiguous();
  auto out = at::empty({B, H, 1, hd}, q.options());
  const float* qp = qc.data_ptr<float>();
  const float* mp = masked ? mask.data_ptr<float>() : nullptr;
  float* op = out.data_ptr<float>();
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  at::parallel_for(0, B * H, 1, [&](int64_t h0, int64_t h1) {
    std::vector<float> s(n), qs(hd);
    std::vector<uint8_t> planes(2 * n + 8);
    for (int64_t bh = h0; bh < h1; ++bh) {
      for (int64_t d = 0; d < hd; ++d) qs[d] = qp[bh * hd + d] * scale;
      const float* m = mp ? mp + bh / H * n : nullptr;
      const int64_t at = bh * T * hd, next = bh + 1 < h1 ? T : 0;  // the next head's frames
      if (int8)
        attn::attend(qs.data(), k.data_ptr<int8_t>() + at, v.data_ptr<int8_t>() + at,
                     k_scale.data_ptr<float>() + bh * T, v_scale.data_ptr<float>() + bh * T, m,
                     n, hd, s.data(), op + bh * hd, planes.data(), next);
      else
        attn::attend(qs.data(), k.data_ptr<at::Half>() + at, v.data_ptr<at::Half>() + at,
                     nullptr, nullptr, m, n, hd, s.data(), op + bh * hd, nullptr, next);
    }
  });
  return out;
}

// logits [..., V] float32 -> the same shape, -inf below each row's k-th largest (1 <= k <= V).
at::Tensor top_k_filter(const at::Tensor& logits, int64_t k) {
  TORCH_CHECK(logits.scalar_type() == at::kFloat && logits.dim() >= 1, "top_k: float32 logits");
  const int64_t v = logits.size(-1);
  TORCH_CHECK(1 <= k && k <= v, "top_k: k must be in [1, V]");
  const at::Tensor x = logits.contiguous();
  auto out = at::empty_like(x);
  sampling::top_k_filter(x.data_ptr<float>(), x.numel() / v, v, k, out.data_ptr<float>());
  return out;
}

// probs [R, V] float32 -> [R, 1] int64, as torch.multinomial(probs, 1, generator=generator).
at::Tensor multinomial_one(const at::Tensor& probs, std::optional<at::Generator> generator) {
  TORCH_CHECK(probs.scalar_type() == at::kFloat && probs.dim() == 2, "draw: [R, V] float32");
  const at::Tensor p = probs.contiguous();
  auto out = at::empty({p.size(0), 1}, p.options().dtype(at::kLong));
  sampling::draw(p.data_ptr<float>(), p.size(0), p.size(1), sampling::cpu_generator(generator),
                 out.data_ptr<int64_t>());
  return out;
}

// logits [R, V] float32 -> [R, 1] int64 (sampling.h's `sample_rows`).
at::Tensor sample_rows(const at::Tensor& logits, double temperature, int64_t k,
                       std::optional<at::Generator> generator, int64_t threads) {
  return sampling::sample_rows(logits, temperature, k, generator, threads);
}

// Each block of `rows` rows of `into` [R, K] int64 (any strides, R a multiple of rows) takes
// the tokens [rows, K]: the decode loop's sequence column, both halves of a guided batch.
void write_rows(const at::Tensor& tokens, const at::Tensor& into) {
  const int64_t rows = tokens.size(0), k = tokens.size(1);
  TORCH_CHECK(into.scalar_type() == at::kLong && into.dim() == 2 && into.size(1) == k &&
              into.size(0) % rows == 0, "step: `into` must be [a multiple of ", rows, ", ", k,
              "] int64");
  const int64_t* tp = tokens.data_ptr<int64_t>();
  int64_t* ip = into.data_ptr<int64_t>();
  const int64_t s0 = into.stride(0), s1 = into.stride(1);
  for (int64_t r = 0; r < into.size(0); ++r)
    for (int64_t c = 0; c < k; ++c) ip[r * s0 + c * s1] = tp[(r % rows) * k + c];
}

// The weights are parsed again on every call (a few us against a ~10 ms step): holding them
// in a TorchScript class instead would about double the extension's build time.
at::Tensor decoder_step(at::TensorList weights, at::IntArrayRef dims, at::IntArrayRef sizes,
                        double eps, const at::Tensor& tokens, const at::Tensor& positions,
                        int64_t position, at::TensorList kv, const at::Tensor& mask,
                        int64_t cross_rows, int64_t threads, bool guided, double scale, bool draw,
                        double temperature, int64_t top_k, std::optional<at::Generator> generator,
                        const std::optional<at::Tensor>& into) {
  // The tokens in the same call, drawn by the step's threads: back in Python, the first op
  // alone costs ~0.1 ms of cold code and data after a step has streamed the weights.
  const sampling::Settings settings{static_cast<float>(temperature), top_k};
  TORCH_CHECK(tokens.dim() == 3 && !kv.empty(), "step: tokens [B, K, 1] and a cache");
  const int64_t words = kv.size() > 2 ? kv[2].size(2) : 0;
  const step::Rows rows = step::Rows::same(tokens.size(0), position, cross_rows, words);
  at::Tensor drawn = step::Decoder(weights, dims, sizes, eps)
                         .step(tokens, positions, rows, kv, mask, threads, guided, scale,
                               draw ? &settings : nullptr,
                               draw ? sampling::cpu_generator(generator) : nullptr);
  if (draw && into.has_value()) write_rows(drawn, *into);
  return drawn;
}

// The step of rows at positions of their own (`step::Rows`): row b at frame positions[b] of
// cache row slots[b]; the first text_rows.numel() rows with the first text_words[b] words of
// text row text_rows[b]. -> logits [B, K, V] float32.
at::Tensor decoder_rows(at::TensorList weights, at::IntArrayRef dims, at::IntArrayRef sizes,
                        double eps, const at::Tensor& tokens, const at::Tensor& table,
                        const at::Tensor& positions, const at::Tensor& slots, at::TensorList kv,
                        const at::Tensor& text_rows, const at::Tensor& text_words,
                        int64_t threads) {
  const step::Rows rows = step::Rows::of(positions, slots, text_rows, text_words);
  const at::Tensor none = at::empty({0}, table.options());
  return step::Decoder(weights, dims, sizes, eps)
      .step(tokens, table, rows, kv, none, threads, false, 1.0);
}
// The outputs and inputs of one packed int8 block in this build (layout.py packs to them).
std::vector<int64_t> int8_block() { return {int8k::kBlockRows, int8k::kBlockCols}; }
}  // namespace

#ifndef TS_NAMESPACE
#error "build with -DTS_NAMESPACE=<the ops' namespace> (build.py does)"
#endif
// TORCH_LIBRARY pastes its argument: one more macro level expands TS_NAMESPACE first.
#define TS_LIBRARY(ns, m) TORCH_LIBRARY(ns, m)
#define TS_LIBRARY_IMPL(ns, key, m) TORCH_LIBRARY_IMPL(ns, key, m)

// The schemas here and the fake (shape-only) implementations in ops.py are one table each.
TS_LIBRARY(TS_NAMESPACE, m) {
  m.def("int8_block() -> int[]", &int8_block);
  m.def("int8_linear(Tensor x, Tensor packed, Tensor scales, int kc, bool gelu=False) -> Tensor");
  m.def("fp32_linear(Tensor x, Tensor packed, int n, int kc) -> Tensor");
  m.def("attend_one(Tensor q, Tensor k, Tensor v, SymInt n, Tensor mask, Tensor k_scale, "
        "Tensor v_scale) -> Tensor");
  m.def("top_k_filter(Tensor logits, int k) -> Tensor");
  m.def("multinomial_one(Tensor probs, Generator? generator) -> Tensor");
  m.def("sample_rows(Tensor logits, float temperature, int k, Generator? generator, "
        "int threads=1) -> Tensor");
  m.def("decoder_step(Tensor[] weights, int[] dims, int[] sizes, float eps, Tensor tokens, "
        "Tensor positions, int position, Tensor[] kv, Tensor mask, int cross_rows, int threads, "
        "bool guided=False, float scale=1.0, bool draw=False, float temperature=1.0, "
        "int top_k=0, Generator? generator=None, Tensor(a!)? into=None) -> Tensor");
  m.def("decoder_rows(Tensor[] weights, int[] dims, int[] sizes, float eps, Tensor tokens, "
        "Tensor table, Tensor positions, Tensor slots, Tensor[] kv, Tensor text_rows, "
        "Tensor text_words, int threads) -> Tensor");
}

TS_LIBRARY_IMPL(TS_NAMESPACE, CPU, m) {
  m.impl("int8_linear", &int8_linear);
  m.impl("fp32_linear", &fp32_linear);
  m.impl("attend_one", &attend_one);
  m.impl("top_k_filter", &top_k_filter);
  m.impl("multinomial_one", &multinomial_one);
  m.impl("sample_rows", &sample_rows);
  m.impl("decoder_step", &decoder_step);
  m.impl("decoder_rows", &decoder_rows);
}
