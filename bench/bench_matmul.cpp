// Throughput of the CPU weight kernels per weight type.
//
//  * read_bandwidth: a streaming f32 sum over 1 GiB, the machine's read
//    bandwidth that decode matvec is held against.
//  * matvec (decode) on the Llama-3-8B shapes: bytes/s counts the weight
//    bytes streamed. Each shape is stored in enough copies (>= 256 MiB) that
//    consecutive iterations read cold memory, as decode does: one matrix
//    alone would sit in L3 and measure cache, not DRAM.
//  * decode_layer: every matvec of one 8B transformer layer in order
//    (q, k, v, o, gate, up, down).
//  * matmul with 128 tokens (prefill) on 4096 x 4096, reported as FLOP/s.
//
// Weights are random values quantized by the reference quantizers.
//
//   ./bench_matmul [--benchmark_filter=matvec] [google-benchmark flags]
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <new>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/matmul.h"
#include "backend/cpu/weight_kernels.h"
#include "formats/weight_types.h"

namespace longkv {
namespace {

constexpr int64_t kPrefillTokens = 128;
// Working set a cold benchmark cycles through: far above the L3 (32 MiB on
// the Zen 4 VMs) so every iteration streams its weights from DRAM.
constexpr size_t kColdBytes = size_t{256} << 20;

struct Shape {
  const char* name;
  int64_t rows, cols;
};
// Llama-3-8B: hidden 4096, ffn 14336, 8 KV heads of 128, vocab 128256.
constexpr Shape kAttnQ{"4096x4096", 4096, 4096};
constexpr Shape kAttnKV{"1024x4096", 1024, 4096};
constexpr Shape kFfnUp{"14336x4096", 14336, 4096};
constexpr Shape kFfnDown{"4096x14336", 4096, 14336};
constexpr Shape kOutput{"128256x4096", 128256, 4096};

std::vector<float> random_floats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

// Stored matrices of one type. Quantizing hundreds of MiB with the reference
// quantizers would dominate the run, so 1M random values are quantized once
// and their blocks repeated: blocks are self-contained, so any run of whole
// blocks is a valid matrix, and repetition does not help the cache because
// each copy lives at its own address.
class MatrixStore {
 public:
  explicit MatrixStore(WeightType t) : type_(t) {
    constexpr int64_t kSeedElems = int64_t{1} << 20;
    const std::vector<float> src = random_floats(kSeedElems, 1);
    seed_.resize(row_bytes(t, kSeedElems));
    weight_traits(t).from_float_ref(src.data(), seed_.data(), kSeedElems);
  }

  WeightView make(const Shape& s) {
    const size_t n = row_bytes(type_, s.cols) * static_cast<size_t>(s.rows);
    // 64-byte aligned start as an mmapped GGUF tensor would be (at least 32).
    Buffer buf(static_cast<uint8_t*>(::operator new[](n, std::align_val_t{64})));
    for (size_t off = 0; off < n; off += seed_.size())
      std::memcpy(buf.get() + off, seed_.data(), std::min(seed_.size(), n - off));
    const WeightView w{type_, s.rows, s.cols, buf.get()};
    bufs_.push_back(std::move(buf));
    return w;
  }

 private:
  struct AlignedDelete {
    void operator()(uint8_t* p) const { ::operator delete[](p, std::align_val_t{64}); }
  };
  using Buffer = std::unique_ptr<uint8_t[], AlignedDelete>;
  WeightType type_;
  std::vector<uint8_t> seed_;
  std::vector<Buffer> bufs_;
};

void bm_read_bandwidth(benchmark::State& state, int threads) {
  ThreadPool pool(threads);
  const size_t n = (size_t{1} << 30) / sizeof(float);
  std::vector<float> a(n);
  // first touch from the pool so pages are placed as the kernels would see them
  pool.parallel_for(static_cast<int64_t>(n),
                    [&](int64_t b, int64_t e, int) { std::fill(a.data() + b, a.data() + e, 1.0f); });
  std::vector<float> partial(static_cast<size_t>(threads));
  for (auto _ : state) {
    pool.parallel_for(
        static_cast<int64_t>(n),
        [&](int64_t b, int64_t e, int t) {
          // 64 independent lanes: the adds vectorize into several vector
          // accumulators, so neither add latency nor throughput limits it
          float s[64] = {};
          for (int64_t i = b; i + 64 <= e; i += 64)
            for (int k = 0; k < 64; ++k) s[k] += a[static_cast<size_t>(i + k)];
          float sum = 0.0f;
          for (float v : s) sum += v;
          partial[static_cast<size_t>(t)] = sum;
        },
        1 << 16);
    benchmark::DoNotOptimize(partial.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(n * sizeof(float)));
}

// One matvec per iteration, rotating over enough copies to be cold.
void bm_matvec(benchmark::State& state, WeightType t, Shape s, int threads) {
  ThreadPool pool(threads);
  MatrixStore store(t);
  std::vector<WeightView> ws{store.make(s)};
  while (ws.size() * ws[0].nbytes() < kColdBytes) ws.push_back(store.make(s));
  const std::vector<float> x = random_floats(static_cast<size_t>(s.cols), 2);
  std::vector<float> y(static_cast<size_t>(s.rows));
  size_t next = 0;
  for (auto _ : state) {
    matvec(ws[next], x.data(), y.data(), pool);
    next = (next + 1) % ws.size();
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(ws[0].nbytes()));
  state.counters["copies"] = static_cast<double>(ws.size());
}

void bm_decode_layer(benchmark::State& state, WeightType t, int threads) {
  ThreadPool pool(threads);
  MatrixStore store(t);
  const Shape shapes[] = {kAttnQ, kAttnKV, kAttnKV, kAttnQ, kFfnUp, kFfnUp, kFfnDown};
  std::vector<WeightView> ws;
  size_t bytes = 0;
  for (const Shape& s : shapes) {
    ws.push_back(store.make(s));
    bytes += ws.back().nbytes();
  }
  const std::vector<float> x = random_floats(static_cast<size_t>(kFfnDown.cols), 2);
  std::vector<float> y(static_cast<size_t>(kFfnUp.rows));
  for (auto _ : state) {
    for (const WeightView& w : ws) matvec(w, x.data(), y.data(), pool);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(bytes));
}

void bm_matmul(benchmark::State& state, WeightType t, int threads) {
  ThreadPool pool(threads);
  MatrixStore store(t);
  const WeightView w = store.make(kAttnQ);
  const int64_t rows = w.rows, cols = w.cols;
  const std::vector<float> x = random_floats(static_cast<size_t>(cols * kPrefillTokens), 3);
  std::vector<float> y(static_cast<size_t>(rows * kPrefillTokens));
  for (auto _ : state) {
    matmul(w, x.data(), cols, y.data(), rows, kPrefillTokens, pool);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.counters["FLOP/s"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * 2.0 * static_cast<double>(rows * cols) * kPrefillTokens,
      benchmark::Counter::kIsRate);
}

}  // namespace
}  // namespace longkv

int main(int argc, char** argv) {
  using namespace longkv;
  benchmark::Initialize(&argc, argv);
  benchmark::AddCustomContext("kernels", cpu_weight_kernels_isa());
  benchmark::AddCustomContext("openblas", openblas_get_corename());
  benchmark::AddCustomContext("cold_set_MiB", std::to_string(kColdBytes >> 20));
  const WeightType types[] = {WeightType::F32,  WeightType::F16,    WeightType::BF16, WeightType::Q8_0,
                              WeightType::Q4_0, WeightType::Q4_1,   WeightType::Q5_0, WeightType::Q5_1,
                              WeightType::IQ4_NL, WeightType::Q2_K, WeightType::Q3_K, WeightType::Q4_K,
                              WeightType::Q5_K, WeightType::Q6_K,   WeightType::IQ4_XS};
  for (int threads : {1, 2}) {
    benchmark::RegisterBenchmark(("read_bandwidth/threads:" + std::to_string(threads)).c_str(),
                                 bm_read_bandwidth, threads)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  }
  for (WeightType t : types) {
    const std::string tn = weight_traits(t).name;
    for (int threads : {1, 2}) {
      const std::string th = "/threads:" + std::to_string(threads);
      for (const Shape& s : {kFfnDown, kFfnUp, kAttnQ}) {
        benchmark::RegisterBenchmark(("matvec/" + tn + "/" + s.name + th).c_str(), bm_matvec, t, s, threads)
            ->UseRealTime()
            ->Unit(benchmark::kMicrosecond);
      }
      // The output matrix of f32 weights would take 2 GiB: only the formats
      // a model ships its output layer in.
      if (t != WeightType::F32) {
        const std::string name = "matvec/" + tn + "/" + kOutput.name + th;
        benchmark::RegisterBenchmark(name.c_str(), bm_matvec, t, kOutput, threads)
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
      }
      benchmark::RegisterBenchmark(("decode_layer/" + tn + th).c_str(), bm_decode_layer, t, threads)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark(("matmul_t128/" + tn + "/4096x4096" + th).c_str(), bm_matmul, t, threads)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    }
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
