// Throughput of the CPU weight kernels on a 4096 x 4096 matrix per weight
// type: matvec (decode; bytes/s counts the weight bytes streamed, the figure
// to hold against memory bandwidth) and matmul with 128 tokens (prefill;
// reported as FLOP/s). Weights are random values quantized by the reference
// quantizers.
//
//   ./bench_matmul [--benchmark_filter=matvec] [google-benchmark flags]
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/matmul.h"
#include "backend/cpu/weight_kernels.h"
#include "formats/weight_types.h"

namespace longkv {
namespace {

constexpr int64_t kRows = 4096, kCols = 4096;
constexpr int64_t kPrefillTokens = 128;

std::vector<float> random_floats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

// One stored matrix per type, built on first use and kept for the run.
const std::vector<uint8_t>& stored_matrix(WeightType t) {
  static std::map<WeightType, std::vector<uint8_t>> cache;
  auto it = cache.find(t);
  if (it != cache.end()) return it->second;
  const std::vector<float> src = random_floats(static_cast<size_t>(kRows * kCols), 1);
  std::vector<uint8_t> q(row_bytes(t, kCols) * kRows);
  weight_traits(t).from_float_ref(src.data(), q.data(), kRows * kCols);
  return cache.emplace(t, std::move(q)).first->second;
}

void bm_matvec(benchmark::State& state, WeightType t, int threads) {
  ThreadPool pool(threads);
  const auto& q = stored_matrix(t);
  const WeightView w{t, kRows, kCols, q.data()};
  const std::vector<float> x = random_floats(kCols, 2);
  std::vector<float> y(kRows);
  for (auto _ : state) {
    matvec(w, x.data(), y.data(), pool);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(w.nbytes()));
}

void bm_matmul(benchmark::State& state, WeightType t, int threads) {
  ThreadPool pool(threads);
  const auto& q = stored_matrix(t);
  const WeightView w{t, kRows, kCols, q.data()};
  const std::vector<float> x = random_floats(kCols * kPrefillTokens, 3);
  std::vector<float> y(kRows * kPrefillTokens);
  for (auto _ : state) {
    matmul(w, x.data(), kCols, y.data(), kRows, kPrefillTokens, pool);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.counters["FLOP/s"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * 2.0 * kRows * kCols * kPrefillTokens,
      benchmark::Counter::kIsRate);
}

}  // namespace
}  // namespace longkv

int main(int argc, char** argv) {
  using namespace longkv;
  benchmark::Initialize(&argc, argv);
  benchmark::AddCustomContext("kernels", cpu_weight_kernels_isa());
  benchmark::AddCustomContext("openblas", openblas_get_corename());
  benchmark::AddCustomContext("matrix", std::to_string(kRows) + "x" + std::to_string(kCols));
  const WeightType types[] = {WeightType::F32,  WeightType::F16,  WeightType::BF16, WeightType::Q8_0,
                              WeightType::Q4_0, WeightType::Q4_K, WeightType::Q6_K};
  for (WeightType t : types) {
    for (int threads : {1, 2}) {
      const std::string suffix = std::string("/") + weight_traits(t).name + "/threads:" + std::to_string(threads);
      benchmark::RegisterBenchmark(("matvec" + suffix).c_str(), bm_matvec, t, threads)->UseRealTime();
      benchmark::RegisterBenchmark(("matmul_t128" + suffix).c_str(), bm_matmul, t, threads)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    }
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
