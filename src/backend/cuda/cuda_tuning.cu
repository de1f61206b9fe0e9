// LONGKV_CUDA_TUNING: the kernel variants a run starts from (speed
// comparisons of whole decode steps, each switch named after the milestone
// that measured it in cuda_backend.h's CudaTuning), parsed once per process,
// and the one line tools print so that no setting is hidden.
#include <cstdlib>
#include <string>

#include "backend/cuda/cuda_backend.h"
#include "core/error.h"

namespace longkv {

namespace {
// The on/off settings of LONGKV_CUDA_TUNING ("key" or "key=1" on, "key=0"
// off) and the CudaTuning field each sets; the valued ones and qdec (two
// fields) are parsed in cuda_tuning().
using TuningFlag = bool CudaTuning::*;
struct TuningSwitch {
  const char* key;
  TuningFlag flag;
};
constexpr TuningSwitch kTuningSwitches[] = {
    {"gemv_rows", &CudaTuning::gemv_rows},        {"fuse", &CudaTuning::fuse_activation},
    {"mma", &CudaTuning::quant_decode_mma},       {"flash", &CudaTuning::flash_prefill},
    {"ablk", &CudaTuning::attn_block},            {"apdl", &CudaTuning::append_pdl},
    {"qblk", &CudaTuning::quant_block},           {"qfuse", &CudaTuning::quant_fused},
    {"rotk", &CudaTuning::rot_in_step},           {"rotq", &CudaTuning::rot_q_regs},
    {"qqs", &CudaTuning::quant_decode_qsmem},     {"vsub", &CudaTuning::quant_code_subnormal},
    {"khl", &CudaTuning::quant_key_hilo},         {"qcut", &CudaTuning::quant_cut_fused},
    {"gcut", &CudaTuning::graph_cut},             {"gah", &CudaTuning::graph_ahead},
    {"lpage", &CudaTuning::logits_pageable},      {"glu", &CudaTuning::gemv_glu},
    {"gpre", &CudaTuning::gemv_prefetch},         {"gxc", &CudaTuning::gemv_x_coalesced},
    {"pipe", &CudaTuning::gemv_pipe},             {"i8x", &CudaTuning::gemv_i8x},
    {"pdl", &CudaTuning::pdl},                    {"rope", &CudaTuning::gemv_rope},
    {"amma", &CudaTuning::attn_block_mma},        {"gdev", &CudaTuning::greedy_device},
    {"gpipe", &CudaTuning::greedy_pipeline},      {"qearly", &CudaTuning::quant_q_early},
    {"gtop", &CudaTuning::sample_top_device},     {"gbx", &CudaTuning::gemv_batch_x_smem},
    {"b1l", &CudaTuning::batch_one_launch},       {"b1lc", &CudaTuning::batch_carveout},
    {"bfa", &CudaTuning::batch_fused_act},
};

// The settings whose value is a whole number in a range ("key=V"): the
// field each sets, and the rule its error states.
using TuningInt = int CudaTuning::*;
struct TuningRange {
  const char* key;
  const char* var;  // the value's name in the error
  TuningInt field;
  long lo, hi;
  const char* rule;
};
const TuningRange kTuningRanges[] = {
    {"slice", "N", &CudaTuning::slab_slice, 32, 1 << 20, "a whole number of units >= 32"},  // the kernel: whole warps
    {"astl", "T", &CudaTuning::attn_block_long_tokens, 0, 1 << 30,
     "the least tokens for the decode block's long-cache stages, 0 = never"},
    {"qeg", "N", &CudaTuning::quant_q_early_groups, 0, 1 << 20,
     "the least groups a KV head for v3's early q loads, 0 = always"},
    {"bst", "N", &CudaTuning::batch_streams, 1, kMaxBatchStreams, "the streams of a batched step's attention, 1..4"},
    {"bvw", "N", &CudaTuning::batch_v3_wave_share, 1, 4, "a batched step's v3 grid as 1/N of a wave, 1..4"},
    {"bvg", "N", &CudaTuning::batch_v3_groups, 1, 1024,
     "the groups a v3 warp takes in a batched one-launch step, 1..1024"},
    {"bvb", "N", &CudaTuning::batch_v3_blocks, 0, 255,
     "the v3 blocks a KV head and sequence in a batched one-launch step, 0..255 (0: by bvg)"},
    {"gbt", "N", &CudaTuning::gemv_batch_tiles, 0, 4096, "the row tiles a batch GEMV block walks, 0..4096"},
    {"gbhd", "N", &CudaTuning::gemv_batch_h16_dim, 0, 1 << 30,
     "the least rows or columns of a matrix the f16 batch GEMV takes, 0 = every matrix"},
    {"gbhb", "N", &CudaTuning::gemv_batch_h16_blocks, 1, 1 << 20,
     "the blocks the f16 batch GEMV aims at a matrix, 1 and more"},
};
static_assert(kMaxBatchStreams == 4, "bst's rule names the most streams");

// A valued setting's value as a whole number in [lo, hi]; false when it is
// missing, not a number or out of range (the caller's error names the rule).
bool whole_number(const std::string& v, long lo, long hi, long* n) {
  char* end = nullptr;
  *n = std::strtol(v.c_str(), &end, 10);
  return !v.empty() && *end == '\0' && *n >= lo && *n <= hi;
}

TuningFlag switch_of(const std::string& key) {
  for (const auto& sw : kTuningSwitches)
    if (key == sw.key) return sw.flag;
  return nullptr;
}

const TuningRange* range_of(const std::string& key) {
  for (const auto& r : kTuningRanges)
    if (key == r.key) return &r;
  return nullptr;
}
}  // namespace

// LONGKV_CUDA_TUNING="gemv_rows=1,fuse=1,mma=0" starts from other kernel
// variants (speed comparisons of whole decode steps); tools print the result
// (cuda_tuning_description), so no setting is hidden.
CudaTuning& cuda_tuning() {
  static CudaTuning t = [] {
    CudaTuning d;
    const char* e = std::getenv("LONGKV_CUDA_TUNING");
    std::string s = e ? e : "";
    size_t i = 0;
    while (i < s.size()) {
      const size_t j = std::min(s.find(',', i), s.size());
      const std::string item = s.substr(i, j - i);
      const size_t eq = item.find('=');
      const std::string k = item.substr(0, eq);
      const bool on = eq == std::string::npos || item.substr(eq + 1) != "0";
      const std::string v = eq == std::string::npos ? "" : item.substr(eq + 1);
      long n = 0;
      // A switch takes no value, 1 or 0 ("b1l=off" would otherwise read as on).
      const bool is_switch = k == "qdec" || k == "bst2" || switch_of(k);
      if (is_switch && eq != std::string::npos && v != "0" && v != "1")
        fail("LONGKV_CUDA_TUNING: %s is a switch: %s, %s=1 or %s=0 (got '%s')", k.c_str(), k.c_str(), k.c_str(),
             k.c_str(), v.c_str());
      if (k == "qdec") {
        d.quant_decode_v3 = d.decode_pdl = on;
      } else if (const TuningFlag flag = switch_of(k)) {
        d.*flag = on;
      } else if (const TuningRange* r = range_of(k)) {
        if (!whole_number(v, r->lo, r->hi, &n))
          fail("LONGKV_CUDA_TUNING: %s=%s needs %s (got '%s')", r->key, r->var, r->rule, v.c_str());
        d.*(r->field) = static_cast<int>(n);
      } else if (k == "astg") {
        if (v != "0" && v != "2" && v != "3" && v != "4")
          fail("LONGKV_CUDA_TUNING: astg=N needs 0, 2, 3 or 4 (got '%s')", v.c_str());
        d.attn_block_stages = d.attn_block_stages_long = v[0] - '0';
      } else if (k == "acarve" || k == "qcarve") {
        if (!whole_number(v, -1, 100, &n))
          fail("LONGKV_CUDA_TUNING: %s=P needs a percentage 0..100, or -1 for the driver's choice (got '%s')",
               k.c_str(), v.c_str());
        (k == "acarve" ? d.attn_block_carveout : d.quant_decode_carveout) = static_cast<int>(n);
      } else if (k == "bst2") {  // milestone 50's first form: two streams or one
        d.batch_streams = on ? 2 : 1;
      } else if (k == "gbs") {
        if (v != "auto" && v != "0" && v != "1" && v != "2" && v != "3" && v != "4" && v != "6")
          fail("LONGKV_CUDA_TUNING: gbs=N needs the batch GEMV's ring slots, auto, 0, 1, 2, 3, 4 or 6 (got '%s')",
               v.c_str());
        d.gemv_batch_stages = v == "auto" ? -1 : std::atoi(v.c_str());
      } else if (k == "gbr") {
        if (v != "0" && v != "2" && v != "3")
          fail("LONGKV_CUDA_TUNING: gbr=N needs the batch GEMV row-split form's stages, 0, 2 or 3 (got '%s')",
               v.c_str());
        d.gemv_batch_row_stages = std::atoi(v.c_str());
      } else if (k == "gbh") {
        const std::string x = eq == std::string::npos ? "2" : v;
        if (x != "0" && x != "2" && x != "3")
          fail("LONGKV_CUDA_TUNING: gbh=S needs the f16 batch GEMV's stages, 0 (off), 2 or 3 (got '%s')", v.c_str());
        d.gemv_batch_h16 = std::atoi(x.c_str());
      } else if (k == "grb") {
        if (v != "0" && v != "8" && v != "16") fail("LONGKV_CUDA_TUNING: grb=N needs 0, 8 or 16 (got '%s')", v.c_str());
        d.gemv_rows_per_batch = std::atoi(v.c_str());
      } else if (k == "gx8") {
        const std::string x = eq == std::string::npos ? "3" : v;
        if (!whole_number(x, 0, 127, &n)) fail("LONGKV_CUDA_TUNING: gx8=N needs a bit set 0..127 (got '%s')", x.c_str());
        d.gemv_x8 = static_cast<int>(n);
      } else if (k == "qfx" || k == "qstg" || k == "sfx") {
        if (!whole_number(v, 0, k == "qfx" ? 511 : 63, &n) || (k == "qstg" && n != 0 && n != 2 && n != 3))
          fail("LONGKV_CUDA_TUNING: %s needs %s (got '%s')", k.c_str(),
               k == "qstg" ? "0, 2 or 3" : k == "qfx" ? "a bit set 0..511" : "a bit set 0..63", v.c_str());
        (k == "qfx" ? d.quant_fused_probe : k == "sfx" ? d.step_probe : d.quant_decode_stages) = static_cast<int>(n);
      } else {
        std::string keys;
        for (const auto& sw : kTuningSwitches) keys += std::string(sw.key) + ", ";
        for (const auto& r : kTuningRanges) keys += std::string(r.key) + "=" + r.var + ", ";
        fail("LONGKV_CUDA_TUNING: unknown setting '%s' (%sqdec, qfx=N, qstg=N, sfx=N, grb=N, astg=N, acarve=P, "
             "qcarve=P, gx8[=N], bst2, gbs=N, gbr=N, gbh[=S])",
             k.c_str(), keys.c_str());
      }
      i = j + 1;
    }
    return d;
  }();
  return t;
}

std::string cuda_tuning_description() {
  const CudaTuning& t = cuda_tuning();
  return std::string("GEMV ") + (t.gemv_rows ? "rows" : t.gemv_pipe ? "slab (pipelined)" : "slab (m2 order)") +
         (t.gemv_i8x && !t.gemv_rows ? ", Q4_0/Q4_1/Q5_0/Q5_1/IQ4/K-quant GEMV with int8 activations" : "") + ", RMSNorm/SwiGLU " +
         (t.fuse_activation ? "fused into the GEMV's load" : "own kernels") + ", quantized decode " +
         (!t.quant_decode_mma ? "FMA (generic)" : t.quant_decode_v3 ? "tensor cores (v3, staged)" : "tensor cores (m4)") +
         (t.quant_decode_carveout >= 0 ? " (carveout " + std::to_string(t.quant_decode_carveout) + "%)" : "") +
         ", decode PDL " + (t.decode_pdl ? "on" : "off") + ", f16 decode step " +
         (t.attn_block ? "one block kernel (RoPE, append, split, merge" +
                             (t.attn_block_stages ? ", " + std::to_string(t.attn_block_stages) + " cp.async stages" +
                                                        (t.attn_block_long_tokens > 0 &&
                                                                 t.attn_block_stages_long != t.attn_block_stages
                                                             ? " (" + std::to_string(t.attn_block_stages_long) +
                                                                   " from " + std::to_string(t.attn_block_long_tokens) +
                                                                   " tokens)"
                                                             : std::string()) +
                                                        ", " +
                                                        (t.attn_block_mma ? "tensor cores" : "FMA") +
                                                        (t.attn_block_carveout >= 0
                                                             ? ", carveout " + std::to_string(t.attn_block_carveout) + "%)"
                                                             : ")")
                                                  : ", tiles in registers)")
                       : std::string("RoPE, append, split, merge kernels")) +
         ", quantized append PDL " + (t.append_pdl ? "on" : "off") +
         (t.quant_block ? ", quantized steps before the first group: one block kernel" : "") +
         (t.quant_block && t.quant_fused ? ", after it: block kernel + v3" : "") +
         (t.rot_in_step ? std::string(", :rot inside those kernels") +
                              (t.rot_q_regs ? " (v3's q in registers)" : " (v3's q through shared memory)")
                        : std::string(", :rot in kernels of its own")) +
         (t.quant_fused_probe ? ", PROBE qfx=" + std::to_string(t.quant_fused_probe) + " (wrong results)" : "") +
         (t.step_probe ? ", PROBE sfx=" + std::to_string(t.step_probe) + " (launches left out, wrong results)" : "") +
         (t.quant_decode_stages ? ", v3 stages " + std::to_string(t.quant_decode_stages) : "") +
         (t.quant_decode_qsmem ? "" : ", v3's q in registers") +
         (t.quant_code_subnormal ? "" : ", v3's k2v2 code operands 1 + code (vsub=0)") +
         (t.quant_key_hilo ? ", v3's k2v2/k4v4 key B hi/lo (khl)" : "") +
         (t.quant_cut_fused ? "" : ", a decode step's group cut in four operations (qcut=0)") +
         (t.graph_cut ? "" : ", a step that cuts a group runs without a graph (gcut=0)") +
         (t.graph_ahead ? "" : ", steps captured when due, not ahead (gah=0)") +
         (t.logits_pageable ? ", forward_view's logits through pageable memory (lpage)" : "") +
         (t.greedy_device ? "" : ", greedy argmax on the host (gdev=0)") +
         (t.greedy_pipeline ? "" : ", greedy steps one at a time (gpipe=0)") +
         (t.batch_streams == 0 ? ""
                               : ", batched steps attend on " + std::to_string(t.batch_streams) + " stream(s) (bst)") +
         (!t.batch_one_launch ? std::string(", a batched step's quantized attention sequence by sequence (b1l=0)")
          : ", a batched step's quantized attention in one launch a layer, " +
                (t.batch_v3_blocks ? std::to_string(t.batch_v3_blocks) + " v3 blocks a KV head (b1l, bvb)"
                                   : std::to_string(t.batch_v3_groups) + " groups a v3 warp (b1l, bvg)") +
                (t.batch_carveout ? "" : ", its kernels at their own carveouts (b1lc=0)")) +
         (t.batch_v3_wave_share == 0 ? ""
                                     : ", a batched step's v3 grid 1/" + std::to_string(t.batch_v3_wave_share) +
                                           " of a wave a sequence (bvw)") +
         (t.gemv_batch_stages < 0 && !t.gemv_batch_x_smem ? std::string(", batch GEMV ring's x through L1 (gbx=0)")
                                                          : std::string()) +
         (t.gemv_batch_stages == 0 ? std::string(", batch GEMV milestone 50's register form (gbs=0)") : std::string()) +
         (t.gemv_batch_stages == 1 ? std::string(", batch GEMV weights not kept in L1 (gbs=1)") : std::string()) +
         (t.gemv_batch_stages >= 2 ? ", batch GEMV through a ring of " + std::to_string(t.gemv_batch_stages) +
                                    " cp.async slots a warp (gbs" +
                                    (t.gemv_batch_tiles ? ", " + std::to_string(t.gemv_batch_tiles) + " tiles a block"
                                                        : std::string()) +
                                    (t.gemv_batch_x_smem ? ")" : ", x through L1: gbx=0)")
                              : std::string()) +
         (t.gemv_batch_row_stages == 0 ? std::string(", batch GEMV of 9-32 tokens without its row-split form (gbr=0)")
          : t.gemv_batch_row_stages != CudaTuning{}.gemv_batch_row_stages
              ? ", batch GEMV row-split form with " + std::to_string(t.gemv_batch_row_stages) + " stages (gbr)"
              : std::string()) +
         (t.gemv_batch_h16 ? ", batch GEMV with f16 activations, " + std::to_string(t.gemv_batch_h16) +
                                 " stages (gbh), for matrices of " +
                                 (t.gemv_batch_h16_dim ? ">= " + std::to_string(t.gemv_batch_h16_dim) +
                                                             " rows or columns (gbhd)"
                                                       : std::string("every shape (gbhd=0)")) +
                                 (t.gemv_batch_h16_blocks != CudaTuning{}.gemv_batch_h16_blocks
                                      ? ", ~" + std::to_string(t.gemv_batch_h16_blocks) + " blocks a matrix (gbhb)"
                                      : std::string())
                           : CudaTuning{}.gemv_batch_h16 ? ", batch GEMV with int8 activations only (gbh=0)"
                                                          : std::string()) +
         (t.batch_fused_act ? ""
                            : ", a batched step's RMSNorm, SwiGLU, gate and up as launches of their own (bfa=0)") +
         (t.sample_top_device ? "" : ", top-k sampling from the whole row on the host (gtop=0)") +
         (!t.quant_q_early ? ", v3 loads q after its first copies (qearly=0)"
          : t.quant_q_early_groups != CudaTuning{}.quant_q_early_groups
              ? ", v3 loads q before its first copies from " + std::to_string(t.quant_q_early_groups) +
                    " groups a KV head (qeg)"
              : std::string()) +
         ", prefill attention " +
         (t.flash_prefill ? "flash (f16 GEMM path)" : "cuBLAS") + ", PDL (GEMV, RoPE) " + (t.pdl ? "on" : "off") +
         ", RoPE " + (t.gemv_rope ? "in the q|k GEMV's store" : "own kernel") +
         (t.gemv_glu ? ", SwiGLU in the gate|up GEMV's store" : ", SwiGLU in w_down's load") +
         (t.gemv_prefetch ? ", one-pass 4096-column Q4_0 GEMVs request every row before the wait" : "") +
         (t.gemv_i8x && !t.gemv_x_coalesced ? ", int8 GEMV activations loaded lane by lane" : "") +
         (t.gemv_x8 & 3 ? ", the residual GEMVs write the next RMSNorm GEMV's x in int8 (gx8=" + std::to_string(t.gemv_x8) + ")"
                        : "") +
         (t.gemv_x8 & 32 ? std::string(", every 16-row Q4_0 GEMV link one kernel (gx8 bit 32") +
                               (t.gemv_x8 & 64 ? ", its readers' first batch whole before the wait)" : ")")
                         : "") +
         (t.gemv_rows_per_batch ? ", Q4_0 GEMV " + std::to_string(t.gemv_rows_per_batch) + " rows a batch" : "") +
         (t.slab_slice != 512 ? ", slab slice " + std::to_string(t.slab_slice) + " units" : "");
}

int batch_streams_for(bool quantized) {
  const int n = cuda_tuning().batch_streams;
  return n > 0 ? n : quantized ? 4 : 2;
}

int batch_v3_wave_share_for(bool quantized) {
  const int n = cuda_tuning().batch_v3_wave_share;
  return n > 0 ? n : batch_streams_for(quantized) >= 4 ? 2 : 1;
}

}  // namespace longkv
