// `--device cpu|cuda` for the subcommands: the choice, the fallback to the
// CPU (with the reason) when CUDA cannot be used, and the CUDA bench.
#pragma once

#include <string>
#include <vector>

#include "model/model_weights.h"

namespace longkv::cli {

// True if `device` is "cuda" and a CUDA device is usable; for "cuda" without
// one, warns "--device cuda: <why>; running on the CPU" and returns false.
// Throws Error for a device name other than cpu/cuda.
bool use_cuda_device(const std::string& device);

struct CudaBenchOptions {
  std::string kv_mode = "f16";
  std::string gemm = "f16";
  std::vector<int> depths{0};
  int n_prompt = 512, n_gen = 16, reps = 1;
  bool synthetic = false;  // depths filled with random keys/values
  bool max_ctx = false;    // also search the longest context that fits, per KV mode
  bool sample = false;     // decode steps draw with `longkv run`'s default sampler instead of greedy
  double gpu_mem_mib = 0;  // > 0: the search sizes for a card of this total (a larger card's rest unused)
  std::vector<std::string> kv_modes{"f16"};  // for the max-context search
  // Batched decode (--batch): sequences a step, 0 = as many as fit; empty: none.
  std::vector<int> batches;
};

// Prefill and decode speed on the GPU (Markdown table on stdout).
int bench_cuda(const ModelWeights& w, const CudaBenchOptions& o);

}  // namespace longkv::cli
