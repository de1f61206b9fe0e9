// Saved per-position log-probabilities of a perplexity run, so a later run
// (another KV mode, another build) can report KL divergence and top-1
// agreement against it.
//
// File layout (little-endian):
//   char magic[8] = "LKVLOGP1"; u32 version = 1; u32 n_vocab; u32 ctx;
//   u32 reserved = 0; then records until EOF, one per scored position:
//   i32 target token; f32 lo; f32 step; u16 code[n_vocab]
// log p[i] = lo + step * code[i]. lo = max(min log p, max log p - 40):
// probabilities below e^-40 of the top one are clamped (they cannot move a
// KL divergence), which bounds the quantization step at 40/65535 ≈ 6e-4.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace longkv {

class LogProbWriter {
 public:
  LogProbWriter(const std::string& path, int n_vocab, int ctx);  // throws Error on I/O failure
  ~LogProbWriter();
  // Appends one position given its raw logits.
  void add(const float* logits, int32_t target);

 private:
  std::string path_;
  FILE* f_ = nullptr;
  int n_vocab_;
  std::vector<uint16_t> codes_;
  std::vector<float> lp_;
};

class LogProbReader {
 public:
  LogProbReader(const std::string& path);  // validates the header
  ~LogProbReader();
  int n_vocab() const { return n_vocab_; }
  int ctx() const { return ctx_; }
  // Reads the next position into logp[n_vocab]; false at end of file.
  // Throws Error on a truncated record.
  bool next(float* logp, int32_t* target);

 private:
  std::string path_;
  FILE* f_ = nullptr;
  int n_vocab_ = 0, ctx_ = 0;
  std::vector<uint16_t> codes_;
};

// log-softmax of logits[n] into out[n] (double accumulation).
void log_softmax(const float* logits, int n, float* out);

}  // namespace longkv
