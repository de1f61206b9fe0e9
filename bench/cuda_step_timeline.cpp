// The decode step's kernels on a timeline (docs/cuda-notes.md, milestone 36,
// "Left"): where a step's time goes between its kernels, which profiles of
// one launch at a time (ncu) cannot show. Milestones 34 and 36 each changed
// the kernel after v3 (the wo GEMV); each lost 3-5 us a layer in the k2v2
// step at depth, although alone each was as fast or faster.
//
// Builds the synthetic llama3-8b with Q4_0 weights on the GPU, fills DEPTH
// random tokens into a --kv MODE cache, and decodes as `longkv bench --device
// cuda` does (greedy on the device, CUDA graphs, PDL, the next step launched
// ahead). After 4 warm-up steps it records STEPS steps' kernels through
// CUPTI's activity API: start and end on the GPU's clock, blocks, registers,
// the shared memory each ran with. Kernels are taken in order of start; a
// step begins at its embedding lookup; a layer is the kernels from its q|k|v
// GEMV to its down GEMV. Per role in a layer (the four GEMVs by their order,
// the other kernels by name), the means over the layers and steps of:
//   start - the previous kernel's end    (negative: started early, by PDL)
//   end - the previous kernel's end      (what it adds to the step)
//   its duration, blocks, registers a thread, shared memory executed.
// The "adds" column sums to the layer's time. LONGKV_CUDA_TUNING applies as
// in longkv bench, so two runs compare two settings.
//
// --batch N (milestone 56): N sequences, each filled to DEPTH, one token of
// each a step through CudaModel::forward_batch (as `longkv bench --batch`:
// no graphs, the host waits for each step's logits). Its GEMVs are the batch
// GEMV's kernels; a step's gap on the host shows in "step", not in "layer".
//
// Build (CMake with LONGKV_CUDA=ON and CUPTI; run only on a GPU):
//   cmake --build build --target step_timeline
//   ./build/step_timeline [--kv k2v2] [-d 131072] [-n 8]
#include <cupti.h>
#include <cxxabi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "kv/kv_mode.h"
#include "model/synthetic_model.h"

namespace {

#define CUPTI_CK(call)                                                               \
  do {                                                                               \
    const CUptiResult r_ = (call);                                                   \
    if (r_ != CUPTI_SUCCESS) {                                                       \
      const char* s_ = nullptr;                                                      \
      cuptiGetResultString(r_, &s_);                                                 \
      std::fprintf(stderr, "error: %s: %s\n", #call, s_ ? s_ : "unknown CUPTI error"); \
      std::exit(1);                                                                  \
    }                                                                                \
  } while (0)

struct Kernel {
  uint64_t start = 0, end = 0;
  std::string name;  // demangled, without template arguments or parameters
  int64_t blocks = 0;
  int regs = 0;
  uint32_t smem_executed = 0;  // bytes of shared memory the SMs were configured with
};
std::vector<Kernel> g_kernels;

std::string short_name(const char* mangled) {
  if (!mangled) return "?";
  int status = 0;
  char* d = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
  std::string s = status == 0 && d ? d : mangled;
  std::free(d);
  const std::string anon = "(anonymous namespace)::";
  for (size_t at; (at = s.find(anon)) != std::string::npos;) s.erase(at, anon.size());
  const size_t cut = s.find_first_of("<(");
  if (cut != std::string::npos) s.resize(cut);
  const size_t ns = s.rfind("::"), sp = s.rfind(' ');  // the name after its namespaces and return type
  const size_t from = std::max(ns == std::string::npos ? 0 : ns + 2, sp == std::string::npos ? 0 : sp + 1);
  return s.substr(from);
}

void CUPTIAPI buffer_requested(uint8_t** buf, size_t* size, size_t* max_records) {
  *size = size_t(16) << 20;
  *buf = static_cast<uint8_t*>(std::aligned_alloc(8, *size));
  *max_records = 0;
}

void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buf, size_t, size_t valid) {
  CUpti_Activity* r = nullptr;
  while (cuptiActivityGetNextRecord(buf, valid, &r) == CUPTI_SUCCESS) {
    if (r->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) continue;
    const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(r);
    g_kernels.push_back({k->start, k->end, short_name(k->name), int64_t(k->gridX) * k->gridY * k->gridZ,
                         k->registersPerThread, k->sharedMemoryExecuted});
  }
  std::free(buf);
}

struct Role {
  int n = 0;
  double lead = 0, adds = 0, dur = 0, blocks = 0, regs = 0, smem = 0;
  int order = 0;  // first position seen in a layer, for printing
};

int usage() {
  std::fprintf(stderr, "usage: step_timeline [--kv MODE (k2v2)] [-d DEPTH (131072)] [-n STEPS (8)] [--batch N (0: "
               "the single-token step)]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace longkv;
  std::string kv = "k2v2";
  long depth = 131072, steps = 8, batch = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) return usage();
    const char* v = argv[++i];
    char* end = nullptr;
    if (a == "--kv") {
      kv = v;
    } else if (a == "-d" || a == "-n" || a == "--batch") {
      const long x = std::strtol(v, &end, 10);
      const long lo = a == "-n" ? 1 : 0, hi = a == "-d" ? 1L << 24 : a == "-n" ? 1024 : kMaxBatchSeqs;
      if (*end != '\0' || x < lo || x > hi) return usage();
      (a == "-d" ? depth : a == "-n" ? steps : batch) = x;
    } else {
      return usage();
    }
  }
  std::string why;
  if (!cuda_available(&why)) {
    std::fprintf(stderr, "error: %s\n", why.c_str());
    return 1;
  }
  const ModelConfig cfg = synthetic_config("llama3-8b");
  try {
    ThreadPool pool(std::max(1u, std::thread::hardware_concurrency()));
    const ModelWeights w = make_synthetic_model(cfg, WeightType::Q4_0, 1, pool);
    CudaModelOptions mo;
    mo.kv_mode = parse_kv_mode(kv).to_string();
    mo.max_tokens = static_cast<int>(depth + steps + 8);
    mo.max_seqs = static_cast<int>(std::max(1L, batch));
    auto model = CudaModel::create(w, mo);
    const std::vector<int32_t> toks(mo.max_seqs, 1);
    std::vector<int> seqs(mo.max_seqs);
    for (int b = 0; b < mo.max_seqs; ++b) seqs[b] = b;
    // One decode run: steps tokens (of every sequence with --batch).
    auto decode = [&](int n) {
      if (batch == 0) {
        model->decode_greedy(1, model->kv_size(), n, [](int32_t) { return true; });
      } else {
        for (int i = 0; i < n; ++i) model->forward_batch(toks.data(), seqs.data(), static_cast<int>(batch));
      }
      model->synchronize();
    };
    if (batch == 0) model->fill_random_kv(static_cast<int>(depth), 7);
    for (int b = 0; b < batch && depth > 0; ++b) model->fill_random_kv_seq(b, static_cast<int>(depth), 7 + b);
    decode(4);  // warm-up: the step graphs captured
    CUPTI_CK(cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed));
    CUPTI_CK(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL));
    decode(static_cast<int>(steps));
    CUPTI_CK(cuptiActivityFlushAll(1));
    CUPTI_CK(cuptiActivityDisable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL));
    std::printf("model: synthetic llama3-8b, Q4_0 weights; kv %s, depth %ld, %ld steps after 4 warm-up steps%s  \n"
                "kernels: %s  \nrecorded %zu kernels\n\n",
                mo.kv_mode.c_str(), depth, steps,
                batch ? (", " + std::to_string(batch) + " sequences a step (forward_batch)").c_str() : "",
                cuda_tuning_description().c_str(), g_kernels.size());
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }

  std::sort(g_kernels.begin(), g_kernels.end(), [](const Kernel& a, const Kernel& b) { return a.start < b.start; });
  // Steps start at the embedding lookup. A kernel belongs to layer
  // (GEMVs so far, itself included - 1) / G, G the GEMVs a layer (4; a
  // batched step with bfa=0 5: gate and up apart, milestone 58); layers
  // 1 .. n_layers - 2 are averaged (the first follows the embedding, the
  // last precedes the output).
  const char* kOne[] = {"q|k|v GEMV", "wo GEMV", "gate|up GEMV", "down GEMV"};
  const char* kBatch[] = {"q|k|v GEMV", "wo GEMV", "gate GEMV", "up GEMV", "down GEMV"};
  const bool split_gate_up = batch && !cuda_tuning().batch_fused_act;
  const int G = split_gate_up ? 5 : 4;
  const char* const* kGemvs = split_gate_up ? kBatch : kOne;
  const int n_layers = cfg.n_layers;
  std::map<std::string, Role> roles;
  double step_sum = 0, layer_sum = 0;
  int n_steps = 0, n_layer_samples = 0;
  size_t i = 0;
  while (i < g_kernels.size() && g_kernels[i].name != "get_rows_kernel") ++i;
  while (i < g_kernels.size()) {
    size_t j = i + 1;  // the next step's first kernel
    while (j < g_kernels.size() && g_kernels[j].name != "get_rows_kernel") ++j;
    if (j == g_kernels.size()) break;  // the last step may be cut off
    step_sum += 1e-3 * double(g_kernels[j].start - g_kernels[i].start);
    ++n_steps;
    int gemvs = 0, pos = 0;
    uint64_t done = g_kernels[i].end;  // the latest end so far
    double layer_adds = 0;
    for (size_t k = i + 1; k < j; ++k) {
      const Kernel& c = g_kernels[k];
      const bool is_gemv = c.name == "gemv_slab_kernel" || c.name.rfind("gemv_batch_", 0) == 0;
      std::string role = c.name;
      if (is_gemv) role = gemvs < G * n_layers ? kGemvs[gemvs % G] : "output GEMV";
      gemvs += is_gemv;
      const int layer = (gemvs - 1) / G;
      const double lead = 1e-3 * (double(c.start) - double(done));
      const double adds = c.end > done ? 1e-3 * double(c.end - done) : 0.0;
      done = std::max(done, c.end);
      if (layer < 1 || layer > n_layers - 2 || gemvs > G * n_layers) continue;
      Role& r = roles[role];
      if (r.n == 0) r.order = pos;
      ++pos;
      ++r.n;
      r.lead += lead;
      r.adds += adds;
      r.dur += 1e-3 * double(c.end - c.start);
      r.blocks += double(c.blocks);
      r.regs += c.regs;
      r.smem += c.smem_executed / 1024.0;
      layer_adds += adds;
      if (is_gemv && gemvs % G == 0) {  // a down GEMV closes its layer
        layer_sum += layer_adds;
        ++n_layer_samples;
        layer_adds = 0;
      }
    }
    i = j;
  }
  if (n_steps == 0 || roles.empty()) {
    std::fprintf(stderr, "error: no whole step recorded (%zu kernels)\n", g_kernels.size());
    return 1;
  }
  std::vector<std::pair<std::string, Role>> order(roles.begin(), roles.end());
  std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) { return a.second.order < b.second.order; });
  std::printf("| kernel (layers 1-%d) | count | start - previous end, us | adds to the step, us | duration, us | blocks | "
              "registers | shared memory executed, KiB |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
              n_layers - 2);
  for (const auto& [name, r] : order)
    std::printf("| %s | %d | %.2f | %.2f | %.2f | %.0f | %.0f | %.0f |\n", name.c_str(), r.n, r.lead / r.n, r.adds / r.n,
                r.dur / r.n, r.blocks / r.n, r.regs / r.n, r.smem / r.n);
  std::printf("\nlayer: %.2f us (its kernels' adds, mean of %d); step: %.1f us (embedding to embedding, mean of %d)\n",
              layer_sum / std::max(1, n_layer_samples), n_layer_samples, step_sum / n_steps, n_steps);
  return 0;
}
