// Helpers shared by the tests: asset paths, random data, error measures,
// running the CLI.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "kv/kv_cache.h"

namespace longkv::test {

// Path under ../shared (LONGKV_SHARED env var overrides the build default).
std::string shared_path(const std::string& rel);
bool shared_exists(const std::string& rel);

// A KV cache shape (rope: pre-RoPE caches only).
KvShape kv_shape(int n_heads, int n_kv, int d, int max_tokens, const RopeTable* rope = nullptr);

// Uniform random floats in [lo, hi).
std::vector<float> random_floats(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f);

// ||a - b||^2 / ||b||^2 (normalized mean squared error).
double nmse(const float* a, const float* b, size_t n);

struct CmdResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};
// Runs the longkv CLI with `args` (shell-quoted by the caller as needed).
CmdResult run_cli(const std::string& args);

// A fresh temporary directory (removed by the OS; tests write small files).
std::string temp_dir();
std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& bytes);

}  // namespace longkv::test

#define LONGKV_REQUIRE_SHARED(rel)                                                   \
  do {                                                                               \
    if (!::longkv::test::shared_exists(rel)) GTEST_SKIP() << "missing asset " << rel; \
  } while (0)
