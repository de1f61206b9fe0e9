#include "test_util.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace longkv::test {

std::string shared_path(const std::string& rel) {
  const char* env = std::getenv("LONGKV_SHARED");
  std::string base = env && *env ? env : LONGKV_SHARED_DIR;
  return base + "/" + rel;
}

bool shared_exists(const std::string& rel) {
  struct stat st {};
  return ::stat(shared_path(rel).c_str(), &st) == 0;
}

KvShape kv_shape(int n_heads, int n_kv, int d, int max_tokens, const RopeTable* rope) {
  KvShape s;
  s.n_heads = n_heads;
  s.n_kv_heads = n_kv;
  s.head_dim = d;
  s.max_tokens = max_tokens;
  s.rope = rope;
  return s;
}

std::vector<float> random_floats(size_t n, uint32_t seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

double nmse(const float* a, const float* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    num += d * d;
    den += static_cast<double>(b[i]) * b[i];
  }
  return den > 0 ? num / den : num;
}

std::string temp_dir() {
  char tmpl[] = "/tmp/longkv-test-XXXXXX";
  const char* d = ::mkdtemp(tmpl);
  return d ? std::string(d) : std::string("/tmp");
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

CmdResult run_cli(const std::string& args) {
  const std::string dir = temp_dir();
  const std::string out = dir + "/stdout", err = dir + "/stderr";
  const std::string cmd = std::string(LONGKV_CLI_PATH) + " " + args + " >" + out + " 2>" + err;
  CmdResult r;
  const int status = std::system(cmd.c_str());
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  r.out = read_file(out);
  r.err = read_file(err);
  std::remove(out.c_str());
  std::remove(err.c_str());
  ::rmdir(dir.c_str());
  return r;
}

}  // namespace longkv::test
