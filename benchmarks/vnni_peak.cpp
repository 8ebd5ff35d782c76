// The CPU's ceiling for the int8 products: how many vpdpbusd instructions a second its cores
// retire, all cores at once, with 12 independent accumulators each (enough to hide the
// instruction's latency), registers only. The batch step's products take a known count of
// them (RESULTS.md, "The batch step"), so the two give the products' share of this ceiling.
//
//   g++ -O2 -pthread benchmarks/vnni_peak.cpp -o /tmp/vnni_peak && /tmp/vnni_peak [threads]
//
// Each form runs only where the CPU reports it (the functions carry their own target).
#include <immintrin.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

namespace {
constexpr int64_t kIterations = 40000000;  // x 12 instructions: ~0.1-0.2 s a core

// Twelve accumulators named one by one (an array indexed in a loop may live in memory).
#define TWELVE(X) X(a0) X(a1) X(a2) X(a3) X(a4) X(a5) X(a6) X(a7) X(a8) X(a9) X(a10) X(a11)

__attribute__((target("avx512f,avx512vnni"))) void spin512() {
#define ZERO(a) __m512i a = _mm512_setzero_si512();
#define STEP(a) asm volatile("vpdpbusd %1, %2, %0" : "+v"(a) : "v"(w), "v"(x));
  TWELVE(ZERO)
  const __m512i x = _mm512_set1_epi8(3), w = _mm512_set1_epi8(5);
  for (int64_t i = 0; i < kIterations; ++i) {
    TWELVE(STEP)
  }
#undef ZERO
#undef STEP
}

__attribute__((target("avxvnni"))) void spin256() {
#define ZERO(a) __m256i a = _mm256_setzero_si256();
#define STEP(a) asm volatile("%{vex%} vpdpbusd %1, %2, %0" : "+x"(a) : "x"(w), "x"(x));
  TWELVE(ZERO)
  const __m256i x = _mm256_set1_epi8(3), w = _mm256_set1_epi8(5);
  for (int64_t i = 0; i < kIterations; ++i) {
    TWELVE(STEP)
  }
#undef ZERO
#undef STEP
}

// Billions of instructions a second over `threads` threads running `spin` at once.
double rate(void (*spin)(), int threads) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> team;
  for (int t = 0; t < threads; ++t) team.emplace_back(spin);
  for (auto& t : team) t.join();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return 12.0 * kIterations * threads / seconds / 1e9;
}
}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  __builtin_cpu_init();
  for (int round = 0; round < 3; ++round) {
    if (__builtin_cpu_supports("avx512vnni"))
      std::printf("512-bit vpdpbusd, %d threads: %.2f G/s\n", threads, rate(spin512, threads));
    if (__builtin_cpu_supports("avxvnni"))
      std::printf("256-bit vpdpbusd, %d threads: %.2f G/s\n", threads, rate(spin256, threads));
  }
}
