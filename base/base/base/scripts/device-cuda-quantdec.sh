#!/usr/bin/env bash
# Milestone-9 device run (run tool, carry [".devdeps"], kind nvidia-h100-x1,
# timeout <= 420 s): build, the quantized-decode checks (every kernel vs the
# CPU cache, records byte-identical) and graph replay first, then the
# one-layer decode attention report (milestone 4's kernel vs milestone 9's
# v3 on the same card) and the llama3-8b Q4_0 bench at 131K with the
# default kernels. Small files under $OUT; a summary last.
# SKIP_BENCH=1 leaves the model bench out; BASE_BENCH=1 adds the same bench
# with the other decode attention (LONGKV_CUDA_TUNING=qdec=0 after milestone
# 9's default switch; QDEC=1 runs the main bench with qdec=1 instead).
set -o pipefail
cd "$(dirname "$0")/.."
source scripts/device-setup.sh
timeout 150 stdbuf -oL $T --gtest_filter='CudaQuant.DecodeFromCodesMatchesCpuCache:Cuda.GraphReplayMatchesDirectDecode' \
  > $OUT/tests.log 2>&1
echo "tests rc $? at $(( $(date +%s) - t0 )) s"
grep -E "^quant |graph replay|worst|FAILED|PASSED|Failure|Expected|Which is|differs|rror" $OUT/tests.log | head -60
timeout 120 stdbuf -oL $T --gtest_filter='CudaQuant.DecodeAttentionSpeedReport' > $OUT/attn.log 2>&1
echo "attn report rc $? at $(( $(date +%s) - t0 )) s"
grep -E "^decode attention|Failure|rror" $OUT/attn.log
if [[ -z "${SKIP_BENCH:-}" && -x $B ]]; then
  ${QDEC:+env LONGKV_CUDA_TUNING=qdec=$QDEC} timeout 90 $B bench --device cuda --synthetic llama3-8b --wtype q4_0 -d 131072 --kv f16,k4v4,k2v2 -n 16 -p 0 \
    > $OUT/bench.md 2>&1
  echo "bench rc $? at $(( $(date +%s) - t0 )) s"
  grep -vE "^\s*$" $OUT/bench.md | grep -E "^\||bandwidth|kernels|graph|rror|device|decode" | head -20
  if [[ -n "${BASE_BENCH:-}" ]]; then
    LONGKV_CUDA_TUNING=qdec=${BASE_QDEC:-0} timeout 70 $B bench --device cuda --synthetic llama3-8b --wtype q4_0 -d 131072 \
      --kv f16,k4v4,k2v2 -n 16 -p 0 > $OUT/bench_base.md 2>&1
    echo "base bench rc $? at $(( $(date +%s) - t0 )) s"
    grep -E "^\|" $OUT/bench_base.md | head -8
  fi
fi
echo "total: $(( $(date +%s) - t0 )) s"
