#!/usr/bin/env bash
# Milestone-7 device run (run tool, carry [".devdeps"], kind nvidia-h100-x1,
# timeout <= 300 s): build, the quantized-decode checks (every tensor-core
# variant vs the CPU cache, records byte-identical) and graph replay, the
# one-layer decode attention report (milestone 4's tensor-core kernel vs the
# v2 variants on the same card), and the llama3-8b Q4_0 bench at 131K with
# the default kernels. Small files under $OUT; a summary last.
# SKIP_BENCH=1 leaves the model bench out.
set -o pipefail
cd "$(dirname "$0")/.."
source scripts/device-setup.sh
timeout 120 stdbuf -oL $T --gtest_filter='CudaQuant.DecodeFromCodesMatchesCpuCache:Cuda.GraphReplayMatchesDirectDecode' \
  > $OUT/tests.log 2>&1
echo "tests rc $? at $(( $(date +%s) - t0 )) s"
grep -E "^quant |graph replay|worst|FAILED|PASSED|Failure|Expected|Which is|differs|error" $OUT/tests.log | head -40
timeout 90 stdbuf -oL $T --gtest_filter='CudaQuant.DecodeAttentionSpeedReport' > $OUT/attn.log 2>&1
echo "attn report rc $? at $(( $(date +%s) - t0 )) s"
grep -E "^decode attention|Failure|error" $OUT/attn.log
if [[ -z "${SKIP_BENCH:-}" ]]; then
  timeout 70 $B bench --device cuda --synthetic llama3-8b --wtype q4_0 -d 131072 --kv f16,k2v2,k4v4 -n 16 -p 0 \
    > $OUT/bench.md 2>&1
  echo "bench rc $? at $(( $(date +%s) - t0 )) s"
  grep -vE "^\s*$" $OUT/bench.md | grep -E "^\||bandwidth|kernels|graph|rror|device" | head -20
fi
echo "total: $(( $(date +%s) - t0 )) s"
