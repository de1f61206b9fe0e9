// LONGKV_CUDA_TUNING through the CLI (tools print the variants in use, so no
// setting is hidden; a bad one is one error line). Needs a GPU: without one
// `--device cuda` runs on the CPU and never reads the variable.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "backend/cuda/cuda_backend.h"
#include "test_util.h"

namespace longkv {
namespace {

// LONGKV_CUDA_TUNING is parsed once per process, so each setting runs the
// CLI: a bad one is one error line naming the key and what it takes (the
// probes' and the batch-size key's ranges included); a good one is named in
// the bench's kernels line.
TEST(Cuda, TuningSettingsParseOrFailInOneLine) {
  std::string why;
  if (!cuda_available(&why)) GTEST_SKIP() << why;
  constexpr const char* kModel = "models/evalmodel/evalmodel-llama37m-q8_0.gguf";
  LONGKV_REQUIRE_SHARED(kModel);
  const std::string bench = "bench -m " + test::shared_path(kModel) + " -p 0 -n 1 -d 0 --device cuda";
  auto with = [&](const char* setting) {
    ::setenv("LONGKV_CUDA_TUNING", setting, 1);
    auto r = test::run_cli(bench);
    ::unsetenv("LONGKV_CUDA_TUNING");
    return r;
  };
  const struct {
    const char* setting;
    const char* message;
  } bad[] = {
      {"bogus", "LONGKV_CUDA_TUNING: unknown setting 'bogus' ("},
      {"grb=7", "LONGKV_CUDA_TUNING: grb=N needs 0, 8 or 16 (got '7')"},
      {"gx8=128", "LONGKV_CUDA_TUNING: gx8=N needs a bit set 0..127 (got '128')"},
      {"sfx=64", "LONGKV_CUDA_TUNING: sfx needs a bit set 0..63 (got '64')"},
      {"qfx=512", "LONGKV_CUDA_TUNING: qfx needs a bit set 0..511 (got '512')"},
      {"qstg=1", "LONGKV_CUDA_TUNING: qstg needs 0, 2 or 3 (got '1')"},
      {"slice=8", "LONGKV_CUDA_TUNING: slice=N needs a whole number of units >= 32 (got '8')"},
      {"qeg=-1", "LONGKV_CUDA_TUNING: qeg=N needs the least groups a KV head for v3's early q loads, 0 = always (got '-1')"},
      {"astl=x", "LONGKV_CUDA_TUNING: astl=T needs the least tokens for the decode block's long-cache stages, 0 = never (got 'x')"},
      {"bst=5", "LONGKV_CUDA_TUNING: bst=N needs the streams of a batched step's attention, 1..4 (got '5')"},
      {"bvw=0", "LONGKV_CUDA_TUNING: bvw=N needs a batched step's v3 grid as 1/N of a wave, 1..4 (got '0')"},
      {"bvg=0", "LONGKV_CUDA_TUNING: bvg=N needs the groups a v3 warp takes in a batched one-launch step, 1..1024 (got '0')"},
      {"b1l=off", "LONGKV_CUDA_TUNING: b1l is a switch: b1l, b1l=1 or b1l=0 (got 'off')"},
      {"bvb=256", "LONGKV_CUDA_TUNING: bvb=N needs the v3 blocks a KV head and sequence in a batched one-launch step, 0..255 (0: by bvg) (got '256')"},
      {"gbs=5", "LONGKV_CUDA_TUNING: gbs=N needs the batch GEMV's ring slots, auto, 0, 1, 2, 3, 4 or 6 (got '5')"},
      {"gbt=-1", "LONGKV_CUDA_TUNING: gbt=N needs the row tiles a batch GEMV block walks, 0..4096 (got '-1')"},
      {"gbr=4", "LONGKV_CUDA_TUNING: gbr=N needs the batch GEMV row-split form's stages, 0, 2 or 3 (got '4')"},
      {"gbh=1", "LONGKV_CUDA_TUNING: gbh=S needs the f16 batch GEMV's stages, 0 (off), 2 or 3 (got '1')"},
      {"gbhb=0", "LONGKV_CUDA_TUNING: gbhb=N needs the blocks the f16 batch GEMV aims at a matrix, 1 and more (got '0')"},
      {"gbhd=-1", "LONGKV_CUDA_TUNING: gbhd=N needs the least rows or columns of a matrix the f16 batch GEMV takes, 0 = every matrix (got '-1')"},
  };
  for (const auto& b : bad) {
    const auto r = with(b.setting);
    EXPECT_NE(r.exit_code, 0) << b.setting;
    EXPECT_NE(r.err.find(b.message), std::string::npos) << b.setting << ": " << r.err;
    const size_t at = r.err.find("error: ");
    EXPECT_TRUE(at != std::string::npos && r.err.find("error: ", at + 1) == std::string::npos &&
                r.err.find('\n', at) == r.err.size() - 1)
        << b.setting << ": " << r.err;  // one error line, the last
  }
  const auto unknown = with("bogus");
  for (const char* key : {"sfx=N", "grb=N", "qfx=N", "gxc", "qqs", "vsub", "khl", "qcut", "gcut", "gah", "lpage", "gdev", "gpipe", "qearly", "gtop", "qeg=N", "astl=T"})
    EXPECT_NE(unknown.err.find(key), std::string::npos) << key;
  const auto lane = with("gxc=0");  // milestone 21's loads, named in the kernels line
  EXPECT_EQ(lane.exit_code, 0) << lane.err;
  EXPECT_NE(lane.out.find("int8 GEMV activations loaded lane by lane"), std::string::npos) << lane.out;
  const auto qs = with("qqs=0");  // v3's q in registers (milestone 24's default off), named in the kernels line
  EXPECT_EQ(qs.exit_code, 0) << qs.err;
  EXPECT_NE(qs.out.find("v3's q in registers"), std::string::npos) << qs.out;
  const auto forms = with("vsub=0,khl");  // v3's comparison forms (milestones 25, 26), named in the kernels line
  EXPECT_EQ(forms.exit_code, 0) << forms.err;
  EXPECT_NE(forms.out.find("code operands 1 + code (vsub=0)"), std::string::npos) << forms.out;
  EXPECT_NE(forms.out.find("key B hi/lo (khl)"), std::string::npos) << forms.out;
  const auto cut = with("qcut=0,gcut=0,gah=0");  // milestone 27's comparisons: the cut and the graphs as before
  EXPECT_EQ(cut.exit_code, 0) << cut.err;
  EXPECT_NE(cut.out.find("group cut in four operations (qcut=0)"), std::string::npos) << cut.out;
  EXPECT_NE(cut.out.find("cuts a group runs without a graph (gcut=0)"), std::string::npos) << cut.out;
  EXPECT_NE(cut.out.find("captured when due, not ahead (gah=0)"), std::string::npos) << cut.out;
  const auto one = with("bst2=0");  // milestone 50's batched attention on one stream, named in the kernels line
  EXPECT_EQ(one.exit_code, 0) << one.err;
  EXPECT_NE(one.out.find("batched steps attend on 1 stream(s) (bst)"), std::string::npos) << one.out;
  const auto one_launch = with("bvb=0,bvg=32");  // milestone 55's split of the batched attention in one launch
  EXPECT_EQ(one_launch.exit_code, 0) << one_launch.err;
  EXPECT_NE(one_launch.out.find("a batched step's quantized attention in one launch a layer, 32 groups a v3 warp "
                                "(b1l, bvg)"),
            std::string::npos)
      << one_launch.out;
  const auto by_blocks = with("bvb=8");  // milestone 56: b1l's split as blocks a KV head
  EXPECT_EQ(by_blocks.exit_code, 0) << by_blocks.err;
  EXPECT_NE(by_blocks.out.find("in one launch a layer, 8 v3 blocks a KV head (b1l, bvb)"), std::string::npos)
      << by_blocks.out;
  const auto streams = with("b1l=0");  // milestone 55's default: each sequence's attention on the streams
  EXPECT_EQ(streams.exit_code, 0) << streams.err;
  EXPECT_NE(streams.out.find("quantized attention sequence by sequence (b1l=0)"), std::string::npos) << streams.out;
  const auto own_carve = with("b1lc=0");  // milestone 56: b1l's kernels without the shared carveout
  EXPECT_EQ(own_carve.exit_code, 0) << own_carve.err;
  EXPECT_NE(own_carve.out.find("its kernels at their own carveouts (b1lc=0)"), std::string::npos) << own_carve.out;
  const auto share = with("bvw=3");  // milestone 55's batched v3 grids, named in the kernels line
  EXPECT_EQ(share.exit_code, 0) << share.err;
  EXPECT_NE(share.out.find("a batched step's v3 grid 1/3 of a wave a sequence (bvw)"), std::string::npos)
      << share.out;
  const auto ring = with("gbs=4,gbt=2");  // milestone 51's batch GEMV form, named in the kernels line
  EXPECT_EQ(ring.exit_code, 0) << ring.err;
  EXPECT_NE(ring.out.find("batch GEMV through a ring of 4 cp.async slots a warp (gbs, 2 tiles a block)"),
            std::string::npos) << ring.out;
  const auto x8 = with("gx8");  // milestone 36's int8 x between GEMVs, named in the kernels line
  EXPECT_EQ(x8.exit_code, 0) << x8.err;
  EXPECT_NE(x8.out.find("the residual GEMVs write the next RMSNorm GEMV's x in int8 (gx8=3)"), std::string::npos)
      << x8.out;
  const auto early = with("qearly=0");  // milestone 29's comparison, named in the kernels line
  EXPECT_EQ(early.exit_code, 0) << early.err;
  EXPECT_NE(early.out.find("v3 loads q after its first copies (qearly=0)"), std::string::npos) << early.out;
  const auto eg = with("qeg=0");  // milestone 30's threshold changed, named in the kernels line
  EXPECT_EQ(eg.exit_code, 0) << eg.err;
  EXPECT_NE(eg.out.find("v3 loads q before its first copies from 0 groups a KV head (qeg)"), std::string::npos) << eg.out;
  const auto top = with("gtop=0");  // milestone 30's comparison, named in the kernels line
  EXPECT_EQ(top.exit_code, 0) << top.err;
  EXPECT_NE(top.out.find("top-k sampling from the whole row on the host (gtop=0)"), std::string::npos) << top.out;
  const auto greedy = with("gdev=0,gpipe=0");  // milestone 28's comparisons: the argmax on the host, no pipeline
  EXPECT_EQ(greedy.exit_code, 0) << greedy.err;
  EXPECT_NE(greedy.out.find("greedy argmax on the host (gdev=0)"), std::string::npos) << greedy.out;
  EXPECT_NE(greedy.out.find("greedy steps one at a time (gpipe=0)"), std::string::npos) << greedy.out;
  EXPECT_NE(greedy.out.find("the given tokens, each step's logits to the host"), std::string::npos) << greedy.out;
  const auto rs = with("gbr=3");  // milestone 53's row-split batch GEMV, other than the default, in the kernels line
  EXPECT_EQ(rs.exit_code, 0) << rs.err;
  EXPECT_NE(rs.out.find("batch GEMV row-split form with 3 stages (gbr)"), std::string::npos) << rs.out;
  const auto rs0 = with("gbr=0");
  EXPECT_EQ(rs0.exit_code, 0) << rs0.err;
  EXPECT_NE(rs0.out.find("batch GEMV of 9-32 tokens without its row-split form (gbr=0)"), std::string::npos) << rs0.out;
  for (const char* h : {"gbh", "gbh=3"}) {  // milestone 57's f16 batch GEMV: no value is 2 stages
    const auto bh = with(h);
    EXPECT_EQ(bh.exit_code, 0) << bh.err;
    EXPECT_NE(bh.out.find(std::string("batch GEMV with f16 activations, ") + (h[3] ? "3" : "2") + " stages (gbh)"),
              std::string::npos)
        << bh.out;
  }
  EXPECT_NE(with("gbh").out.find("f16 activations, 2 stages (gbh), for matrices of >= 8192 rows or columns (gbhd)"),
            std::string::npos);
  EXPECT_NE(with("gbh,gbhd=0").out.find("2 stages (gbh), for matrices of every shape (gbhd=0)"), std::string::npos);
  EXPECT_NE(with("gbhb=768").out.find("rows or columns (gbhd), ~768 blocks a matrix (gbhb)"), std::string::npos);
  const auto h0 = with("gbh=0");
  EXPECT_EQ(h0.out.find("f16 activations"), std::string::npos) << h0.out;
  EXPECT_NE(h0.out.find("batch GEMV with int8 activations only (gbh=0)"), std::string::npos) << h0.out;
  const auto bfa = with("bfa=0");  // milestone 58's comparison: a batched step's activations as launches of their own
  EXPECT_EQ(bfa.exit_code, 0) << bfa.err;
  EXPECT_NE(bfa.out.find("a batched step's RMSNorm, SwiGLU, gate and up as launches of their own (bfa=0)"),
            std::string::npos)
      << bfa.out;
  EXPECT_EQ(h0.out.find("(bfa=0)"), std::string::npos) << h0.out;
  const auto page = with("lpage");  // milestone 26's comparison: logits through pageable memory
  EXPECT_EQ(page.exit_code, 0) << page.err;
  EXPECT_NE(page.out.find("logits through pageable memory (lpage)"), std::string::npos) << page.out;
  // The f16 decode block's stages by length (milestone 42): the default names
  // both counts, astg=N one count for every length.
  const auto def = with("");
  EXPECT_EQ(def.exit_code, 0) << def.err;
  EXPECT_NE(def.out.find("2 cp.async stages (3 from 4096 tokens), tensor cores"), std::string::npos) << def.out;
  const auto stg = with("astg=3");
  EXPECT_EQ(stg.exit_code, 0) << stg.err;
  EXPECT_NE(stg.out.find("3 cp.async stages, tensor cores"), std::string::npos) << stg.out;
  const auto ok = with("grb=16,sfx=0,qfx=0");
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_NE(ok.out.find("Q4_0 GEMV 16 rows a batch"), std::string::npos) << ok.out;
  EXPECT_EQ(ok.out.find("PROBE"), std::string::npos) << ok.out;
  const auto probe = with("sfx=4");
  EXPECT_EQ(probe.exit_code, 0) << probe.err;
  EXPECT_NE(probe.out.find("PROBE sfx=4 (launches left out, wrong results)"), std::string::npos) << probe.out;
}

// The f16 decode block's stages by the step's split bucket (milestone 42):
// the rule the launches follow, on the host (no GPU needed).
TEST(Cuda, DecodeBlockStagesFollowLength) {
  CudaTuning& t = cuda_tuning();
  const CudaTuning saved = t;
  t = CudaTuning{};
  EXPECT_EQ(attn_block_stages_for(163), 2);  // k2v2's fp16 part before its first group
  EXPECT_EQ(attn_block_stages_for(4095), 2);
  EXPECT_EQ(attn_block_stages_for(4096), 3);
  EXPECT_EQ(attn_block_stages_for(1 << 20), 3);
  t.attn_block_long_tokens = 0;  // astl=0: never
  EXPECT_EQ(attn_block_stages_for(1 << 20), 2);
  t = CudaTuning{};
  t.attn_block_stages = 0;  // tiles in registers at every length
  EXPECT_EQ(attn_block_stages_for(1 << 20), 0);
  t = saved;
}

}  // namespace
}  // namespace longkv
