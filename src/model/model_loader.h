// Loading models from any supported source and saving them as GGUF.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "model/model_weights.h"
#include "model/weight_mix.h"
#include "tokenizer/vocab.h"

namespace longkv {

class GgufFile;
class ThreadPool;

struct LoadedModel {
  ModelWeights weights;
  std::optional<Vocab> vocab;  // from the file when it carries one
};

// GGUF (by magic), llama2.c checkpoint (.bin), or a Hugging Face directory
// (config.json + model.safetensors, or model.safetensors.index.json shards)
// or a .safetensors file with config.json beside it. Throws Error with a
// one-line message on any problem.
LoadedModel load_model(const std::string& path);

// Individual loaders.
LoadedModel load_gguf_model(std::shared_ptr<GgufFile> gguf);
LoadedModel load_llama2c_model(const std::string& path);
LoadedModel load_safetensors_model(const std::string& path);

// Write weights + vocab as a GGUF v3 "llama" file: RoPE convention converted
// to interleaved (q/k rows permuted when the source is neox), weight types
// kept (F32/F16/BF16/quantized) unless `out_type` names a type to quantize
// matrices into, or `out_mix` a layout of several (llama.cpp's Q4_K_M, ...;
// norms stay F32).
void save_model_gguf(const ModelWeights& w, const Vocab& vocab, const std::string& path,
                     std::optional<WeightType> out_type = std::nullopt);
void save_model_gguf(const ModelWeights& w, const Vocab& vocab, const std::string& path,
                     const std::optional<WeightMix>& out_mix);

// The conversion's work: the rows of a matrix quantized on `pool` (nullptr:
// the calling thread; the bytes do not depend on it), and `progress(done,
// total)` after each matrix, counted in weights (total: every matrix's).
struct GgufSaveWork {
  ThreadPool* pool = nullptr;
  std::function<void(int64_t done, int64_t total)> progress;
};
void save_model_gguf(const ModelWeights& w, const Vocab& vocab, const std::string& path,
                     const std::optional<WeightMix>& out_mix, const GgufSaveWork& work);

}  // namespace longkv
