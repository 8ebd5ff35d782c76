"""A CPU kernel for the float32 decoder's few-row matrix products, built on first use.

The float32 twin of `cpu_int8` (read its docstring for the idea): a decoder step multiplies
2 rows by 1.4 GB of weights, and torch's sgemm reaches about a quarter of the memory
bandwidth on 2 cores at M=2. Here the weights are repacked once, at load time, into
`cpu_int8`'s blocked layout (4 output rows x 16 inputs, K-chunk by K-chunk) so each thread
reads one increasing address range, with a software prefetch a fixed distance ahead.

Numerics: float32 weights, float32 activations, float32 FMA accumulation; only the order of
the sum differs from torch's. `PackedLinear` holds the packed weight (the only copy) in place
of a bias-free nn.Linear; for more rows than `MAX_ROWS` (a long prefill) it unpacks a
temporary [out, in] copy for torch's GEMM, which is then the faster of the two.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import int8 as cpu_int8

MAX_ROWS = 128  # above this torch's GEMM (on the unpacked weight) wins, 1 or 2 threads here

# The float32 product itself, shared by the one-product op below and `cpu_step`'s whole step.
FP32_PRODUCT = r"""
namespace f32k {
constexpr int64_t kAhead = 1024;  // prefetch distance in floats (4 KiB), along the stream

// Adds (w . x) for 4 rows and M (1 or 2) inputs over one chunk; the block is [kc/16][4][16].
template <int M>
inline void block(const float* x, int64_t ldx, const float* w, int64_t kc, __m128 sums[2]) {
  __m256 acc[M][4];
  for (int m = 0; m < M; ++m)
    for (int r = 0; r < 4; ++r) acc[m][r] = _mm256_setzero_ps();
  for (int64_t k = 0; k < kc; k += 16, w += 64) {
    __m256 xv[M][2];
    for (int m = 0; m < M; ++m) {
      xv[m][0] = _mm256_loadu_ps(x + m * ldx + k);
      xv[m][1] = _mm256_loadu_ps(x + m * ldx + k + 8);
    }
    for (int r = 0; r < 4; ++r) {
      _mm_prefetch(reinterpret_cast<const char*>(w + 16 * r + kAhead), _MM_HINT_T0);
      const __m256 lo = _mm256_loadu_ps(w + 16 * r), hi = _mm256_loadu_ps(w + 16 * r + 8);
      for (int m = 0; m < M; ++m) {
        acc[m][r] = _mm256_fmadd_ps(lo, xv[m][0], acc[m][r]);
        acc[m][r] = _mm256_fmadd_ps(hi, xv[m][1], acc[m][r]);
      }
    }
  }
  for (int m = 0; m < M; ++m)
    sums[m] = vecmath::reduce4(acc[m][0], acc[m][1], acc[m][2], acc[m][3]);
}

// Blocks b0..b1 (output columns 4 b0 .. 4 b1) of out [M, ldo] = epilogue(x [M, K] @ w.T),
// w [N, K] packed as [K/kc][N/4][kc/16][4][16]. Sums over earlier K-chunks wait in acc
// [M, N], which may be `out` itself unless adding.
template <vecmath::Epilogue E>
void product_blocks(const float* w, int64_t N, int64_t K, int64_t kc, const float* x, int64_t M,
                    float* acc, float* out, int64_t ldo, int64_t b0, int64_t b1) {
  const int64_t chunks = K / kc;
  vecmath::sweep_blocks(
      b0, b1, M, chunks,
      [&](int64_t c, int64_t b, int64_t m, int rows, __m128* sums) {
        const float* wb = w + (c * (N / 4) + b) * 4 * kc;
        if (rows == 2) block<2>(x + m * K + c * kc, K, wb, kc, sums);
        else block<1>(x + m * K + c * kc, K, wb, kc, sums);
      },
      [&](int64_t c, int64_t b, int64_t row, __m128 sum) {
        float* a = acc + row * N + 4 * b;
        const __m128 v = c == 0 ? sum : _mm_add_ps(_mm_loadu_ps(a), sum);
        if (c < chunks - 1) _mm_storeu_ps(a, v);
        else vecmath::finish<E>(out + row * ldo + 4 * b, v);
      });
}
}  // namespace f32k
"""

OPS = r"""
namespace {
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
  vecmath::parallel_blocks(N, [&](int64_t b0, int64_t b1) {
    f32k::product_blocks<vecmath::Epilogue::Store>(wp, N, K, kc, xp, M, op, op, N, b0, b1);
  });
  return out;
}
}  // namespace

TORCH_LIBRARY_FRAGMENT(tunesmith, m) {
  m.def("fp32_linear(Tensor x, Tensor packed, int n, int kc) -> Tensor");
}
TORCH_LIBRARY_IMPL(tunesmith, CPU, m) { m.impl("fp32_linear", &fp32_linear); }
"""


def available() -> bool:
    """The kernel is built and loaded (see `cpu_kernels`)."""
    from . import build as cpu_kernels  # it imports this module for the source

    return cpu_kernels.available()


def register_fakes() -> None:
    """Output shapes for torch.compile's tracing (called once the ops are loaded)."""

    @torch.library.register_fake("tunesmith::fp32_linear")
    def _(x: torch.Tensor, packed: torch.Tensor, n: int, kc: int) -> torch.Tensor:
        return x.new_empty(x.shape[0], n)


def fp32_linear(x: torch.Tensor, packed: torch.Tensor, n: int, kc: int) -> torch.Tensor:
    """x float32 [M, K] (contiguous) -> float32 [M, N]; needs `available()`."""
    return torch.ops.tunesmith.fp32_linear(x, packed, n, kc)


class PackedLinear(nn.Module):
    """A bias-free float32 Linear whose weight is kept (once) in the kernel's packed layout.

    `from_linear` returns None where the kernel does not apply (device, dtype, shape, no
    compiler); `unpacked_weight()` gives the [out, in] matrix back."""

    weight: torch.Tensor

    def __init__(self, weight: torch.Tensor, chunk: int) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.chunk = chunk
        # A parameter, as in nn.Linear: parameter counts and `.parameters()` users see it.
        packed = cpu_int8.pack(weight.detach(), chunk)
        self.weight = nn.Parameter(packed, requires_grad=False)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> PackedLinear | None:
        w = linear.weight
        chunk = cpu_int8.chunk_for(linear.in_features)
        if (
            linear.bias is not None
            or w.device.type != "cpu"
            or w.dtype != torch.float32
            or chunk is None
            or linear.out_features % cpu_int8.ROWS
            or not available()
        ):
            return None
        return cls(w, chunk)

    def unpacked_weight(self) -> torch.Tensor:
        return cpu_int8.unpack(self.weight, self.out_features, self.in_features, self.chunk)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        if (
            flat.shape[0] <= MAX_ROWS
            and flat.dtype == self.weight.dtype == torch.float32
            and flat.device.type == "cpu"
        ):
            out = fp32_linear(flat.contiguous(), self.weight, self.out_features, self.chunk)
        else:  # many rows, or moved off the CPU / float32 since packing
            out = F.linear(flat, self.unpacked_weight().to(flat.dtype))
        return out.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed fp32"
