// Decode attention time per layer for dense and scalar-quantized KV caches.
//
// One decode step = one query row of 32 heads (Llama-3-8B: 8 KV heads,
// head_dim 128, GQA 4) attending over a cache of 8K or 32K tokens. A real
// model reads a different layer's cache each step, so the benchmark cycles
// through enough cache copies ("layers", >= 192 MiB) that every step streams
// its KV bytes from DRAM instead of the 32 MiB L3.
//
// Counters: kv_bytes = footprint().cpu_bytes of one cache (the bytes one
// step reads), bytes_per_second = kv_bytes / step time, k_bits / v_bits as
// footprint() reports them.
//
// stream_read/threads:N is the yardstick: a plain vector sum over 256 MiB
// split across the pool's threads, i.e. the DRAM read bandwidth a
// memory-bound mode could reach. On a shared machine run with
// --benchmark_repetitions=N and read the _min rows (best of N).
//
//   ./bench_kv_attention [--kv=MODE,MODE...] [--benchmark_filter=k4v4] [google-benchmark flags]
//   ./bench_kv_attention --pairs=BASE,MODE[,TOKENS[,THREADS[,N]]]
//
// --kv replaces the default modes (f16, k8v8, k4v4, k2v2, k2v2:g64,
// k2v2:rot:o2) with any mode strings, e.g. --kv=f16,k4v4:rot:a3.
//
// --pairs measures one speed ratio on a machine whose speed drifts (a shared
// VM: f16 moves by +-20% within minutes, more than the ratios the issue asks
// about). Both modes' caches are built up front and one call of each is
// timed in turn, N times (default 400; 32768 tokens, 1 thread); a pair's two
// calls meet the same machine, so the median of the per-pair ratios
// BASE / MODE is the figure. Prints one Markdown table row.
// GCC 12 flags the _mm512_undefined_* inside its own intrinsic headers.
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <benchmark/benchmark.h>
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kv/kv_cache.h"
#include "kv/kv_mode.h"

namespace longkv {
namespace {

constexpr size_t kColdBytes = size_t{192} << 20;

KvShape llama3_shape(int max_tokens) {
  KvShape s;
  s.n_heads = 32;
  s.n_kv_heads = 8;
  s.head_dim = 128;
  s.max_tokens = max_tokens;
  return s;
}

struct Layers {
  std::string key;
  std::unique_ptr<ThreadPool> pool;
  std::vector<std::unique_ptr<KvCache>> caches;
};

// Enough copies of a filled cache of `mode` that cycling through them
// streams from DRAM.
void build_layers(Layers& cur, const std::string& mode, int tokens, int threads) {
  cur.caches.clear();
  cur.pool = std::make_unique<ThreadPool>(threads);
  cur.key = mode + "/" + std::to_string(tokens) + "/" + std::to_string(threads);
  const KvShape s = llama3_shape(tokens);
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  constexpr int kChunk = 512;
  std::vector<float> k(static_cast<size_t>(kChunk) * s.kv_dim()), v(k.size());
  for (auto& x : k) x = nd(rng);
  for (auto& x : v) x = nd(rng);
  const double bytes_per_cache = kv_mode_bytes_per_token(mode, s) * tokens;
  const int copies = std::max(1, static_cast<int>(kColdBytes / bytes_per_cache + 0.999));
  // One untimed attention call per cache after the appends: an anchored
  // mode (`:a<P>`) cuts its groups only after an attention call, so without
  // it the first timed call on each copy would quantize the whole context
  // (~100 ms at 8K) and, with fewer iterations than copies, every timed call
  // would be such a first call.
  std::vector<float> q(s.q_dim()), out(s.q_dim());
  for (auto& x : q) x = nd(rng);
  for (int c = 0; c < copies; ++c) {
    auto cache = make_kv_cache(mode, s, *cur.pool);
    for (int t = 0; t < tokens; t += kChunk) cache->append(k.data(), v.data(), std::min(kChunk, tokens - t));
    cache->attend(q.data(), 1, out.data(), nullptr);
    cur.caches.push_back(std::move(cache));
  }
}

// The caches of the running benchmark (rebuilt when the config changes, so
// only one config's memory is held at a time).
Layers& layers_for(const std::string& mode, int tokens, int threads) {
  static Layers cur;
  if (cur.key != mode + "/" + std::to_string(tokens) + "/" + std::to_string(threads))
    build_layers(cur, mode, tokens, threads);
  return cur;
}

void BM_decode_attention(benchmark::State& state, const std::string& mode) {
  const int tokens = static_cast<int>(state.range(0)), threads = static_cast<int>(state.range(1));
  Layers& L = layers_for(mode, tokens, threads);
  const KvShape s = llama3_shape(tokens);
  std::vector<float> q(s.q_dim()), out(s.q_dim());
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (auto& x : q) x = nd(rng);
  size_t layer = 0;
  for (auto _ : state) {
    L.caches[layer]->attend(q.data(), 1, out.data(), nullptr);
    benchmark::DoNotOptimize(out.data());
    layer = (layer + 1) % L.caches.size();
  }
  const KvFootprint f = L.caches[0]->footprint();
  state.counters["kv_bytes"] = static_cast<double>(f.cpu_bytes);
  state.counters["k_bits"] = f.k_bits;
  state.counters["v_bits"] = f.v_bits;
  state.counters["layers"] = static_cast<double>(L.caches.size());
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(f.cpu_bytes));
  state.SetLabel(L.caches[0]->mode());
}

// Sum of n floats (4 independent accumulators so the adds keep up with DRAM).
float stream_sum(const float* p, size_t n) {
#if defined(__AVX512F__)
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i + 64 <= n; i += 64) {
    a0 = _mm512_add_ps(a0, _mm512_loadu_ps(p + i));
    a1 = _mm512_add_ps(a1, _mm512_loadu_ps(p + i + 16));
    a2 = _mm512_add_ps(a2, _mm512_loadu_ps(p + i + 32));
    a3 = _mm512_add_ps(a3, _mm512_loadu_ps(p + i + 48));
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
#else
  float a[8] = {};
  for (size_t i = 0; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) a[j] += p[i + j];
  return a[0] + a[1] + a[2] + a[3] + a[4] + a[5] + a[6] + a[7];
#endif
}

void BM_stream_read(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  const size_t n = (size_t{256} << 20) / sizeof(float);
  static std::vector<float> buf(n, 1.0f);
  ThreadPool pool(threads);
  std::vector<float> sums(threads);
  for (auto _ : state) {
    pool.parallel_for(threads, [&](int64_t b, int64_t e, int) {
      for (int64_t t = b; t < e; ++t) sums[t] = stream_sum(&buf[n / threads * t], n / threads);
    });
    benchmark::DoNotOptimize(sums.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(n * sizeof(float)));
}

double min_of(const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); }

double median_of(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}

// --pairs: BASE and MODE timed call by call in turn (see the header).
int run_pairs(const std::string& base, const std::string& mode, int tokens, int threads, int n) {
  Layers a, b;
  build_layers(a, base, tokens, threads);
  build_layers(b, mode, tokens, threads);
  const KvShape s = llama3_shape(tokens);
  std::vector<float> q(s.q_dim()), out(s.q_dim());
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (auto& x : q) x = nd(rng);
  auto call_ms = [&](Layers& L, size_t i) {
    const auto t0 = std::chrono::steady_clock::now();
    L.caches[i % L.caches.size()]->attend(q.data(), 1, out.data(), nullptr);
    benchmark::DoNotOptimize(out.data());
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  };
  std::vector<double> ta, tb, ratio;
  for (int i = -8; i < n; ++i) {  // 8 untimed pairs first
    const double x = call_ms(a, static_cast<size_t>(i + 8)), y = call_ms(b, static_cast<size_t>(i + 8));
    if (i < 0) continue;
    ta.push_back(x);
    tb.push_back(y);
    ratio.push_back(x / y);
  }
  std::vector<double> sorted = ratio;
  std::sort(sorted.begin(), sorted.end());
  const double q1 = sorted[sorted.size() / 4], q3 = sorted[sorted.size() * 3 / 4];
  std::printf("| %s / %s | %d | %d | %d | %.2f | %.2f | %.2f | %.2f | **%.2f×** | %.2f–%.2f× |\n", base.c_str(),
              mode.c_str(), tokens, threads, n, median_of(ta), min_of(ta), median_of(tb), min_of(tb),
              median_of(ratio), q1, q3);
  return 0;
}

void register_all(const std::vector<std::string>& modes) {
  benchmark::RegisterBenchmark("stream_read", BM_stream_read)
      ->ArgName("threads")
      ->Arg(1)
      ->Arg(2)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime()
      ->ComputeStatistics("min", min_of);
  for (const std::string& mode : modes)
    benchmark::RegisterBenchmark(("decode_attention/" + mode).c_str(),
                                 [m = mode](benchmark::State& st) { BM_decode_attention(st, m); })
        ->ArgNames({"tokens", "threads"})
        ->ArgsProduct({{8192, 32768}, {1, 2}})
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime()
        ->ComputeStatistics("min", min_of);
}

}  // namespace
}  // namespace longkv

int main(int argc, char** argv) {
  // --kv=MODE,... (ours) is taken out before google-benchmark sees the flags.
  std::vector<std::string> modes = {"f16", "k8v8", "k4v4", "k2v2", "k2v2:g64", "k2v2:rot:o2"};
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h")  // ours first; google-benchmark's flags follow
      std::printf("bench_kv_attention [--kv=MODE,MODE...] [google-benchmark flags]\n"
                  "  decode attention per KV mode, 8K and 32K tokens, 1 and 2 threads (default modes: f16, k8v8,\n"
                  "  k4v4, k2v2, k2v2:g64, k2v2:rot:o2)\n"
                  "bench_kv_attention --pairs=BASE,MODE[,TOKENS[,THREADS[,N]]]\n"
                  "  one call of each mode in turn, N times (32768 tokens, 1 thread, 400): the median of the\n"
                  "  per-pair time ratios BASE / MODE, one Markdown row\n\n");
    if (a.rfind("--pairs=", 0) == 0) {
      std::vector<std::string> f;
      for (size_t b = 8; b <= a.size();) {
        const size_t e = std::min(a.find(',', b), a.size());
        f.push_back(a.substr(b, e - b));
        b = e + 1;
      }
      try {
        if (f.size() < 2 || f.size() > 5) throw std::invalid_argument("--pairs=BASE,MODE[,TOKENS[,THREADS[,N]]]");
        longkv::parse_kv_mode(f[0]);
        longkv::parse_kv_mode(f[1]);
        // A whole decimal field, or the usage line.
        auto num = [&](size_t i, int dflt) {
          if (f.size() <= i) return dflt;
          size_t end = 0;
          long v = -1;
          try {
            v = std::stol(f[i], &end);
          } catch (const std::exception&) {
          }
          if (end != f[i].size() || v < 0 || v > (1L << 30))
            throw std::invalid_argument("--pairs: '" + f[i] + "' is not a count (--pairs=BASE,MODE[,TOKENS[,THREADS[,N]]])");
          return static_cast<int>(v);
        };
        const int tokens = num(2, 32768), threads = num(3, 1), n = num(4, 400);
        if (tokens < 1024 || threads < 1 || n < 8) throw std::invalid_argument("--pairs: tokens >= 1024, threads >= 1, N >= 8");
        std::printf("| base / mode | tokens | threads | pairs | base median ms | base min ms | mode median ms | "
                    "mode min ms | median ratio | middle half |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        return longkv::run_pairs(f[0], f[1], tokens, threads, n);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_kv_attention: %s\n", e.what());
        return 2;
      }
    }
    if (a.rfind("--kv=", 0) != 0) {
      argv[kept++] = argv[i];
      continue;
    }
    modes.clear();
    for (size_t b = 5; b <= a.size();) {
      const size_t e = std::min(a.find(',', b), a.size());
      if (e > b) modes.push_back(a.substr(b, e - b));
      b = e + 1;
    }
    if (modes.empty()) {
      std::fprintf(stderr, "bench_kv_attention: --kv= needs at least one KV mode\n");
      return 2;
    }
  }
  argc = kept;
  for (const std::string& m : modes) {  // a bad mode is one error line here, not an abort mid-run
    try {
      longkv::parse_kv_mode(m);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "bench_kv_attention: %s\n", e.what());
      return 2;
    }
  }
  longkv::register_all(modes);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
