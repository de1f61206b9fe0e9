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
      {"sfx=32", "LONGKV_CUDA_TUNING: sfx needs a bit set 0..31 (got '32')"},
      {"qfx=512", "LONGKV_CUDA_TUNING: qfx needs a bit set 0..511 (got '512')"},
      {"qstg=1", "LONGKV_CUDA_TUNING: qstg needs 0, 2 or 3 (got '1')"},
      {"slice=8", "LONGKV_CUDA_TUNING: slice=N needs a whole number of units >= 32 (got '8')"},
      {"l2w=x", "LONGKV_CUDA_TUNING: l2w=N needs MiB 0..1024 (got 'x')"},
      {"l2w=1025", "LONGKV_CUDA_TUNING: l2w=N needs MiB 0..1024 (got '1025')"},
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
  for (const char* key : {"sfx=N", "grb=N", "qfx=N", "gxc", "kvef", "l2w=N", "l2el"}) EXPECT_NE(unknown.err.find(key), std::string::npos) << key;
  const auto lane = with("gxc=0");  // milestone 21's loads, named in the kernels line
  EXPECT_EQ(lane.exit_code, 0) << lane.err;
  EXPECT_NE(lane.out.find("int8 GEMV activations loaded lane by lane"), std::string::npos) << lane.out;
  const auto ok = with("grb=16,sfx=0,qfx=0");
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_NE(ok.out.find("Q4_0 GEMV 16 rows a batch"), std::string::npos) << ok.out;
  EXPECT_EQ(ok.out.find("PROBE"), std::string::npos) << ok.out;
  const auto probe = with("sfx=4");
  EXPECT_EQ(probe.exit_code, 0) << probe.err;
  EXPECT_NE(probe.out.find("PROBE sfx=4 (launches left out, wrong results)"), std::string::npos) << probe.out;
  const auto l2 = with("kvef,l2w=32,l2el");
  EXPECT_EQ(l2.exit_code, 0) << l2.err;
  EXPECT_NE(l2.out.find("v3 requests 32 MiB of the next weights into L2 (evict_last), v3 records copied evict_first"),
            std::string::npos)
      << l2.out;
}

// Milestone 23: the L2 requests and the records' cache policy are hints and
// change no result. 200 greedy tokens after a prompt of ~190, so k2v2 cuts
// groups and takes the two-launch step (v3 with its own instantiation for
// these settings) under graph replay: the same text with them as without.
// l2w=1 ends the requests inside gate|up (wo is 0.25 MiB here), l2w=64 takes
// both matrices whole. Another quantized shape is one error line.
TEST(Cuda, L2RequestsLeaveGreedyTokensUnchanged) {
  std::string why;
  if (!cuda_available(&why)) GTEST_SKIP() << why;
  constexpr const char* kModel = "models/evalmodel/evalmodel-llama37m-q8_0.gguf";
  LONGKV_REQUIRE_SHARED(kModel);
  std::string prompt;
  for (int i = 0; i < 12; ++i) prompt += "The river ran past the old mill, and the miller counted the sacks again. ";
  auto run = [&](const char* kv, const char* setting) {
    const std::string cmd = "run -m " + test::shared_path(kModel) + " --device cuda -n 200 --temp 0 --ignore-eos --kv " +
                            kv + " -p \"" + prompt + "\"";
    ::setenv("LONGKV_CUDA_TUNING", setting, 1);
    auto r = test::run_cli(cmd);
    ::unsetenv("LONGKV_CUDA_TUNING");
    return r;
  };
  for (const char* kv : {"k2v2", "k2v2:rot"}) {
    const auto base = run(kv, "");
    ASSERT_EQ(base.exit_code, 0) << kv << ": " << base.err;
    ASSERT_GT(base.out.size(), 200u) << kv;
    for (const char* setting : {"kvef", "kvef,l2w=1", "l2w=64,l2el"}) {
      const auto r = run(kv, setting);
      ASSERT_EQ(r.exit_code, 0) << kv << " " << setting << ": " << r.err;
      EXPECT_EQ(r.out, base.out) << kv << " with " << setting;
    }
  }
  const auto other = run("k4v4", "kvef");
  EXPECT_NE(other.exit_code, 0);
  EXPECT_NE(other.err.find("kvef / l2w are built for the k2v2"), std::string::npos) << other.err;
}

}  // namespace
}  // namespace longkv
