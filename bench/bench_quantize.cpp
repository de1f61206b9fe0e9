// Time of the reference quantizers (`longkv convert --type`), one thread, for
// each weight type that converts from float, on 2^20 gaussian values (sd
// 0.02, as trained weights are): nanoseconds per element = 1e9 /
// items_per_second (Time / 1.048576 for Time in ms).
//
//   ./bench_quantize [--benchmark_filter=quantize/Q4_K] [google-benchmark flags]
#include <benchmark/benchmark.h>

#include <random>
#include <string>
#include <vector>

#include "formats/weight_types.h"

namespace longkv {
namespace {

constexpr int64_t kElems = int64_t{1} << 20;

void bm_quantize(benchmark::State& state, WeightType t) {
  std::mt19937 rng(7);
  std::normal_distribution<float> dist(0.0f, 0.02f);
  std::vector<float> x(kElems);
  for (float& v : x) v = dist(rng);
  std::vector<uint8_t> q(row_bytes(t, kElems));
  for (auto _ : state) {
    weight_traits(t).from_float_ref(x.data(), q.data(), kElems);
    benchmark::DoNotOptimize(q.data());
  }
  state.SetItemsProcessed(state.iterations() * kElems);
}

const bool kRegistered = [] {
  for (const char* name : {"Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "IQ4_NL", "IQ4_XS", "Q2_K", "Q3_K", "Q4_K",
                           "Q5_K", "Q6_K"}) {
    WeightType t;
    if (!parse_weight_type(name, &t)) continue;
    benchmark::RegisterBenchmark((std::string("quantize/") + name).c_str(), bm_quantize, t)
        ->Unit(benchmark::kMillisecond);
  }
  return true;
}();

}  // namespace
}  // namespace longkv

BENCHMARK_MAIN();
