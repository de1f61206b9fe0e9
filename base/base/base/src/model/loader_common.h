// Checks and conversions shared by the model loaders (GGUF, llama2.c,
// safetensors). Internal to src/model; defined in model_loader.cpp.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/model_weights.h"

namespace longkv {

// Rejects configurations no real model has (zero/negative sizes, heads that
// do not divide, odd head dims, absurd layer counts, non-finite eps/base) so
// that later size arithmetic cannot overflow and no absurd allocation
// follows. `src` prefixes the message.
void validate_model_config(const ModelConfig& c, const std::string& src);

// Converts n elements of a supported weight type to float.
std::vector<float> weight_to_floats(WeightType t, const uint8_t* data, int64_t n);

// "dir/stories260K.bin" -> "stories260K".
std::string path_stem(const std::string& path);

// Narrows a 64-bit count read from a file, failing with `what` on overflow.
int checked_int(int64_t v, const std::string& src, const char* what);

}  // namespace longkv
