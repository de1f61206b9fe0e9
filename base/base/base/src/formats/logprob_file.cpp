#include "formats/logprob_file.h"

#include <cerrno>
#include <cmath>
#include <algorithm>
#include <cstring>

#include "core/error.h"

namespace longkv {

static constexpr char kMagic[8] = {'L', 'K', 'V', 'L', 'O', 'G', 'P', '1'};
static constexpr uint32_t kVersion = 1;
static constexpr float kClampRange = 40.0f;

void log_softmax(const float* logits, int n, float* out) {
  float m = logits[0];
  for (int i = 1; i < n; ++i) m = logits[i] > m ? logits[i] : m;
  double s = 0;
  for (int i = 0; i < n; ++i) s += std::exp(static_cast<double>(logits[i]) - m);
  const float lse = m + static_cast<float>(std::log(s));
  for (int i = 0; i < n; ++i) out[i] = logits[i] - lse;
}

LogProbWriter::LogProbWriter(const std::string& path, int n_vocab, int ctx)
    : path_(path), n_vocab_(n_vocab), codes_(n_vocab), lp_(n_vocab) {
  f_ = std::fopen(path.c_str(), "wb");
  LONGKV_CHECK(f_, "%s: cannot create: %s", path.c_str(), std::strerror(errno));
  const uint32_t hdr[4] = {kVersion, static_cast<uint32_t>(n_vocab), static_cast<uint32_t>(ctx), 0};
  LONGKV_CHECK(std::fwrite(kMagic, 1, 8, f_) == 8 && std::fwrite(hdr, 4, 4, f_) == 4, "%s: write failed",
               path.c_str());
}

LogProbWriter::~LogProbWriter() {
  if (f_) std::fclose(f_);
}

void LogProbWriter::add(const float* logits, int32_t target) {
  log_softmax(logits, n_vocab_, lp_.data());
  float lo = lp_[0], hi = lp_[0];
  for (float x : lp_) {
    lo = x < lo ? x : lo;
    hi = x > hi ? x : hi;
  }
  lo = std::max(lo, hi - kClampRange);
  const float step = hi > lo ? (hi - lo) / 65535.0f : 1.0f;
  for (int i = 0; i < n_vocab_; ++i) {
    const float c = std::round((std::max(lp_[i], lo) - lo) / step);
    codes_[i] = static_cast<uint16_t>(std::min(65535.0f, std::max(0.0f, c)));
  }
  const bool ok = std::fwrite(&target, 4, 1, f_) == 1 && std::fwrite(&lo, 4, 1, f_) == 1 &&
                  std::fwrite(&step, 4, 1, f_) == 1 &&
                  std::fwrite(codes_.data(), 2, codes_.size(), f_) == codes_.size();
  LONGKV_CHECK(ok, "%s: write failed (disk full?)", path_.c_str());
}

LogProbReader::LogProbReader(const std::string& path) : path_(path) {
  f_ = std::fopen(path.c_str(), "rb");
  LONGKV_CHECK(f_, "%s: cannot open: %s", path.c_str(), std::strerror(errno));
  char magic[8];
  uint32_t hdr[4];
  LONGKV_CHECK(std::fread(magic, 1, 8, f_) == 8 && std::memcmp(magic, kMagic, 8) == 0,
               "%s: not a longkv log-probability file (bad magic)", path.c_str());
  LONGKV_CHECK(std::fread(hdr, 4, 4, f_) == 4, "%s: truncated header", path.c_str());
  LONGKV_CHECK(hdr[0] == kVersion, "%s: unsupported version %u (expected %u)", path.c_str(), hdr[0], kVersion);
  LONGKV_CHECK(hdr[1] > 0 && hdr[1] <= (1u << 22), "%s: absurd vocabulary size %u", path.c_str(), hdr[1]);
  n_vocab_ = static_cast<int>(hdr[1]);
  ctx_ = static_cast<int>(hdr[2]);
  codes_.resize(n_vocab_);
}

LogProbReader::~LogProbReader() {
  if (f_) std::fclose(f_);
}

bool LogProbReader::next(float* logp, int32_t* target) {
  float lo, step;
  const size_t got = std::fread(target, 4, 1, f_);
  if (got == 0 && std::feof(f_)) return false;
  const bool ok = got == 1 && std::fread(&lo, 4, 1, f_) == 1 && std::fread(&step, 4, 1, f_) == 1 &&
                  std::fread(codes_.data(), 2, codes_.size(), f_) == codes_.size();
  LONGKV_CHECK(ok, "%s: truncated record", path_.c_str());
  for (int i = 0; i < n_vocab_; ++i) logp[i] = lo + step * codes_[i];
  return true;
}

}  // namespace longkv
