"""The int8 decoder's one-frame step on a CPU as one C++ call, built on first use.

Once the int8 products read their weights at memory bandwidth (`cpu_int8`), what is left of
a step is everything around them: ~24 x 15 small operations (norms, residual adds, cache
writes, head splits), each a dispatch through torch and, for most, a parallel region whose
thread start-up costs more than its work on 2 x 1024 values. Compiling the step
(`compile_steps`) merges some of them but leaves ~2.6 ms of loops and guards per step.

Here the whole step (every layer's norms, products, attention and residual adds, the final
norm and the K heads) runs inside one OpenMP parallel region: the threads split each
product's output blocks and the attention heads, and meet at a barrier between dependent
stages, so a step costs its weights' reading time plus a few hundred barriers. The
arithmetic is the eager path's: the same int8 product (`cpu_int8.INT8_PRODUCT`), the same
one-query float16 attention (`cpu_attention.HEAD_ATTENTION`), LayerNorm in float32 (two
passes: mean, then variance), keys and values rounded to float16 as torch rounds them.

It applies to a decoder whose every product is packed for `cpu_int8` and whose KV cache is
float16 (`MusicGenLM.fuse` on a CPU with int8 weights); other decoders use the modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch

from .quantize import Int8Linear

if TYPE_CHECKING:
    from .models.lm import DecoderLayer, LayerNorm, LMCache, MusicGenLM

OPS = r"""
namespace {
using int8k::Epilogue;

struct Linear8 {  // a packed int8 weight [n, k] with a float32 scale per output
  const int8_t* w = nullptr;
  const float* scales = nullptr;
  int64_t n = 0, k = 0, kc = 0;
};

struct Norm {
  const float* w = nullptr;
  const float* b = nullptr;
};

struct Layer {
  Norm self_norm, cross_norm, ffn_norm;
  Linear8 qkv, out, cross_q, cross_out, fc1, fc2;
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

// float32 -> float16, rounding to nearest even (as torch's conversion does).
inline void to_half(const float* x, int64_t n, at::Half* y) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; ++i) y[i] = static_cast<at::Half>(x[i]);
}

// The decoder's weights, as pointers into the tensors it was made from (the caller's).
class Int8Decoder {
 public:
  // tensors: per layer, in order, self-attention norm (weight, bias), qkv (packed, scales),
  // out (packed, scales), cross-attention norm, cross q, cross out (if `cross`: melody
  // decoders have none), feed-forward norm, fc1, fc2; then the final norm and each head's
  // (packed, scales). chunks: each product's kc, in the same order. sizes: (layers, heads,
  // codebooks, cross).
  Int8Decoder(at::TensorList tensors, at::IntArrayRef chunks, at::IntArrayRef sizes, double eps)
      : keep_(tensors), eps_(static_cast<float>(eps)) {
    TORCH_CHECK(sizes.size() == 4, "sizes: (layers, heads, codebooks, cross)");
    const int64_t layers = sizes[0], codebooks = sizes[2];
    heads_ = sizes[1];
    cross_ = sizes[3] != 0;
    TORCH_CHECK(static_cast<int64_t>(keep_.size()) ==
                    layers * (cross_ ? 18 : 12) + 2 + 2 * codebooks,
                "int8 step: wrong number of tensors");
    TORCH_CHECK(static_cast<int64_t>(chunks.size()) == layers * (cross_ ? 6 : 4) + codebooks,
                "int8 step: wrong number of chunk sizes");
    size_t at = 0, product = 0;
    auto norm = [&]() {
      Norm n{vec(keep_[at]), vec(keep_[at + 1])};
      at += 2;
      return n;
    };
    auto linear = [&]() {
      const at::Tensor& w = keep_[at];
      const at::Tensor& s = keep_[at + 1];
      TORCH_CHECK(w.scalar_type() == at::kChar && w.is_contiguous(), "int8 step: packed weights");
      Linear8 l{w.data_ptr<int8_t>(), vec(s), s.numel(), 0, chunks[product++]};
      l.k = w.numel() / l.n;
      TORCH_CHECK(l.n * l.k == w.numel() && l.n % 4 == 0 && l.kc % 16 == 0 && l.kc <= 1024 &&
                  l.k % l.kc == 0, "int8 step: a product's shape does not fit the kernel");
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
    const Layer& first = layers_[0];
    dim_ = first.out.n;
    ffn_ = first.fc1.n;
    vocab_ = lm_heads_[0].n;
    TORCH_CHECK(dim_ % heads_ == 0, "int8 step: heads do not divide the width");
    for (const Layer& l : layers_)
      TORCH_CHECK(l.qkv.n == 3 * dim_ && l.qkv.k == dim_ && l.out.k == dim_ &&
                  l.out.n == dim_ && l.fc1.k == dim_ && l.fc1.n == ffn_ && l.fc2.k == ffn_ &&
                  l.fc2.n == dim_ &&
                  (!cross_ || (l.cross_q.n == dim_ && l.cross_q.k == dim_ &&
                               l.cross_out.n == dim_ && l.cross_out.k == dim_)),
                  "int8 step: layers of different shapes");
    for (const Linear8& h : lm_heads_)
      TORCH_CHECK(h.k == dim_ && h.n == vocab_, "int8 step: heads of different shapes");
  }

  // x [B, D]: the frame's embeddings (positions added) at `position`; kv: per layer self
  // keys, self values [B, H, T, hd], cross keys, cross values [N, H, S, hd], all float16;
  // mask: empty or [N, S] additive float32 for the first N = cross_rows rows.
  // -> logits [B, codebooks, vocab] float32. Writes the frame's keys and values at position.
  at::Tensor step(const at::Tensor& x_in, int64_t position, at::TensorList kv,
                  const at::Tensor& mask, int64_t cross_rows) const {
    const int64_t D = dim_, H = heads_, hd = dim_ / heads_, L = layers_.size();
    TORCH_CHECK(x_in.dim() == 2 && x_in.size(1) == D && x_in.scalar_type() == at::kFloat,
                "int8 step: x must be [B, D] float32");
    const int64_t B = x_in.size(0), N = cross_rows;
    TORCH_CHECK(static_cast<int64_t>(kv.size()) == 4 * L, "int8 step: 4 cache tensors a layer");
    TORCH_CHECK(0 <= N && N <= B && (cross_ || N == 0), "int8 step: cross_rows out of range");
    const int64_t T = kv[0].size(2), S = kv[2].size(2);
    TORCH_CHECK(0 <= position && position < T, "int8 step: position past the cache");
    for (int64_t i = 0; i < 4 * L; ++i) {
      const at::Tensor& t = kv[i];
      const bool self = i % 4 < 2;
      if (!self && N == 0) continue;  // not read
      TORCH_CHECK(t.scalar_type() == at::kHalf && t.is_contiguous() && t.dim() == 4,
                  "int8 step: the cache must be contiguous float16 [rows, H, frames, hd]");
      TORCH_CHECK(t.size(0) == (self ? B : N) && t.size(1) == H && t.size(2) == (self ? T : S) &&
                  t.size(3) == hd, "int8 step: a cache tensor of the wrong shape");
    }
    const bool masked = mask.numel() > 0;
    if (masked)
      TORCH_CHECK(mask.scalar_type() == at::kFloat && mask.is_contiguous() && mask.dim() == 2 &&
                  mask.size(0) == N && mask.size(1) == S, "int8 step: mask must be [N, S]");

    at::Tensor x = x_in.contiguous().clone();  // the residual stream, updated in place
    const auto opts = x.options();
    at::Tensor logits = at::empty({B, static_cast<int64_t>(lm_heads_.size()), vocab_}, opts);
    const int64_t widest = std::max(3 * D, ffn_);
    at::Tensor hq_t = at::empty({B * std::max(D, ffn_)}, opts.dtype(at::kShort));
    at::Tensor hs_t = at::empty({B}, opts);
    at::Tensor acc_t = at::empty({B * std::max(widest, vocab_ * logits.size(1))}, opts);
    at::Tensor qkv_t = at::empty({B * 3 * D}, opts), att_t = at::empty({B * D}, opts);
    at::Tensor ffn_t = at::empty({B * ffn_}, opts);
    float* xp = x.data_ptr<float>();
    int16_t* hq = hq_t.data_ptr<int16_t>();
    float* hs = hs_t.data_ptr<float>();
    float* acc = acc_t.data_ptr<float>();
    float* qkv = qkv_t.data_ptr<float>();
    float* att = att_t.data_ptr<float>();
    float* ffn = ffn_t.data_ptr<float>();
    float* out = logits.data_ptr<float>();
    const float* mp = masked ? mask.data_ptr<float>() : nullptr;
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    const int64_t seen = position + 1;
    const int threads = at::in_parallel_region() ? 1 : at::get_num_threads();

#pragma omp parallel num_threads(threads)
    {
      const int nt = omp_get_num_threads(), t = omp_get_thread_num();
      std::vector<float> row(std::max(D, ffn_)), scores(std::max(seen, S)), qs(hd);
      int64_t lo, hi;
      // Rows of `src` ([rows, width]), this thread's share, normed (if `norm`) and rounded
      // to int16 for the next product.
      auto prepare = [&](const float* src, int64_t rows, int64_t width, const Norm* norm) {
        share(rows, t, nt, lo, hi);
        for (int64_t r = lo; r < hi; ++r) {
          const float* v = src + r * width;
          if (norm != nullptr) {
            layer_norm(v, width, *norm, eps_, row.data());
            v = row.data();
          }
          int8k::quantize_rows16(v, 1, width, hq + r * width, hs + r);
        }
#pragma omp barrier
      };
      // This thread's output blocks of a product of the prepared rows, then a barrier.
      auto product = [&](const Linear8& l, int64_t rows, float* dst, int64_t ldo, Epilogue e,
                         float* partial, bool wait) {
        share(l.n / 4, t, nt, lo, hi);
        if (e == Epilogue::Add)
          int8k::product_blocks<Epilogue::Add>(l.w, l.scales, l.n, l.k, l.kc, hq, hs, rows,
                                               partial, dst, ldo, lo, hi);
        else if (e == Epilogue::Gelu)
          int8k::product_blocks<Epilogue::Gelu>(l.w, l.scales, l.n, l.k, l.kc, hq, hs, rows,
                                                partial, dst, ldo, lo, hi);
        else
          int8k::product_blocks<Epilogue::Store>(l.w, l.scales, l.n, l.k, l.kc, hq, hs, rows,
                                                 partial, dst, ldo, lo, hi);
        if (wait) {
#pragma omp barrier
        }
      };

      for (int64_t i = 0; i < L; ++i) {
        const Layer& l = layers_[i];
        at::Half* self_k = kv[4 * i].data_ptr<at::Half>();
        at::Half* self_v = kv[4 * i + 1].data_ptr<at::Half>();
        const at::Half* cross_k = kv[4 * i + 2].data_ptr<at::Half>();
        const at::Half* cross_v = kv[4 * i + 3].data_ptr<at::Half>();

        // Self-attention: each (row, head) writes its key and value, then attends.
        prepare(xp, B, D, &l.self_norm);
        product(l.qkv, B, qkv, 3 * D, Epilogue::Store, acc, true);
        share(B * H, t, nt, lo, hi);
        for (int64_t bh = lo; bh < hi; ++bh) {
          const int64_t b = bh / H, h = bh % H;
          const float* q = qkv + b * 3 * D + h * hd;
          const int64_t base = bh * T * hd;
          to_half(q + D, hd, self_k + base + position * hd);
          to_half(q + 2 * D, hd, self_v + base + position * hd);
          for (int64_t d = 0; d < hd; ++d) qs[d] = q[d] * scale;
          attn::attend(qs.data(), self_k + base, self_v + base, nullptr, seen, hd,
                       scores.data(), att + b * D + h * hd);
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
            const int64_t b = bh / H, h = bh % H;
            for (int64_t d = 0; d < hd; ++d) qs[d] = qkv[b * D + h * hd + d] * scale;
            attn::attend(qs.data(), cross_k + bh * S * hd, cross_v + bh * S * hd,
                         mp ? mp + b * S : nullptr, S, hd, scores.data(), att + b * D + h * hd);
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
      const int64_t K = lm_heads_.size();
      for (int64_t k = 0; k < K; ++k)
        product(lm_heads_[k], B, out + k * vocab_, K * vocab_, Epilogue::Store,
                acc + k * B * vocab_, false);
    }
    return logits;
  }

 private:
  static const float* vec(const at::Tensor& t) {
    TORCH_CHECK(t.scalar_type() == at::kFloat && t.is_contiguous() && t.dim() == 1,
                "int8 step: norms and scales must be float32 vectors");
    return t.data_ptr<float>();
  }

  at::TensorList keep_;  // the weights the pointers below read (alive for the call)
  std::vector<Layer> layers_;
  std::vector<Linear8> lm_heads_;
  Norm final_;
  int64_t heads_ = 0, dim_ = 0, ffn_ = 0, vocab_ = 0;
  bool cross_ = true;  // layers with cross-attention
  float eps_;
};

at::Tensor int8_step(at::TensorList weights, at::IntArrayRef chunks, at::IntArrayRef sizes,
                     double eps, const at::Tensor& x, int64_t position, at::TensorList kv,
                     const at::Tensor& mask, int64_t cross_rows) {
  return Int8Decoder(weights, chunks, sizes, eps).step(x, position, kv, mask, cross_rows);
}
}  // namespace

TORCH_LIBRARY_FRAGMENT(tunesmith, m) {
  m.def("int8_step(Tensor[] weights, int[] chunks, int[] sizes, float eps, Tensor x, "
        "int position, Tensor[] kv, Tensor mask, int cross_rows) -> Tensor");
}
TORCH_LIBRARY_IMPL(tunesmith, CPU, m) { m.impl("int8_step", &int8_step); }
"""


def available() -> bool:
    """The step is built and loaded (see `cpu_kernels`)."""
    from . import cpu_kernels  # it imports this module for the source

    return cpu_kernels.available()


def register_fakes() -> None:
    """Output shapes for torch.compile's tracing (called once the ops are loaded)."""

    @torch.library.register_fake("tunesmith::int8_step")
    def _(
        weights: list[torch.Tensor],
        chunks: list[int],
        sizes: list[int],
        eps: float,
        x: torch.Tensor,
        position: int,
        kv: list[torch.Tensor],
        mask: torch.Tensor,
        cross_rows: int,
    ) -> torch.Tensor:
        return x.new_empty(x.shape[0], sizes[2], weights[-1].shape[0])


@dataclass
class Int8Step:
    """One decoder's packed int8 weights, in the order the C++ step reads them (the
    decoder's own tensors, not copies), and what else it needs to know."""

    tensors: list[torch.Tensor]
    chunks: list[int]  # each product's K-chunk
    sizes: list[int]  # layers, heads, codebooks, cross-attention (1) or not (0)
    eps: float  # the LayerNorms' epsilon

    @classmethod
    def for_decoder(cls, lm: MusicGenLM) -> Int8Step | None:
        """The step for `lm` if every product of its steps is a packed int8 layer and its KV
        cache float16 (what `fuse` makes of an int8 decoder on a CPU); else None."""
        if lm.kv_dtype != torch.float16 or not available():
            return None
        tensors: list[torch.Tensor] = []
        chunks: list[int] = []

        def norm(module: LayerNorm) -> bool:
            w, b = module.weight, module.bias
            if w is None or b is None or w.dtype != torch.float32 or b.dtype != torch.float32:
                return False
            tensors.extend([w.detach(), b.detach()])
            return True

        def linear(module: object) -> bool:
            if not isinstance(module, Int8Linear) or module.scales_f32 is None:
                return False
            tensors.extend([module.weight, module.scales_f32])
            chunks.append(cast(int, module.chunk))
            return True

        layers = [cast("DecoderLayer", layer) for layer in lm.layers]
        cross = all(hasattr(layer, "encoder_attn") for layer in layers)  # not in melody's
        norms = [lm.layer_norm]
        for layer in layers:
            parts = [
                norm(layer.self_attn_layer_norm),
                linear(layer.self_attn.qkv_proj),
                linear(layer.self_attn.out_proj),
            ]
            norms.append(layer.self_attn_layer_norm)
            if cross:
                parts += [
                    norm(layer.encoder_attn_layer_norm),
                    linear(layer.encoder_attn.q_proj),
                    linear(layer.encoder_attn.out_proj),
                ]
                norms.append(layer.encoder_attn_layer_norm)
            parts += [norm(layer.final_layer_norm), linear(layer.fc1), linear(layer.fc2)]
            norms.append(layer.final_layer_norm)
            if not all(parts):
                return None
        if not norm(lm.layer_norm) or not all([linear(head) for head in lm.lm_heads]):
            return None
        eps = {norm_.eps for norm_ in norms}
        if len(eps) != 1:
            return None
        sizes = [len(layers), lm.cfg.num_heads, lm.cfg.num_codebooks, int(cross)]
        return cls(tensors, chunks, sizes, eps.pop())

    def __call__(self, x: torch.Tensor, position: int, cache: LMCache) -> torch.Tensor:
        """x [B, D] float32 (embeddings and position of the frame at `position`) -> logits
        [B, K, V] float32; writes the frame's keys and values into `cache`."""
        kv = [
            t
            for layer in cache.layers
            for t in (layer.self_k, layer.self_v, layer.cross_k, layer.cross_v)
        ]
        mask, rows = cache.cross_mask, cache.cross_rows
        # An additive mask (new_cache's) [rows, 1, 1, S], read as [rows, S].
        flat = x.new_empty(0) if mask is None or rows == 0 else mask.reshape(rows, -1).float()
        return torch.ops.tunesmith.int8_step(
            self.tensors,
            self.chunks,
            self.sizes,
            self.eps,
            x,
            position,
            kv,
            flat,
            cache.cross_rows,
        )
