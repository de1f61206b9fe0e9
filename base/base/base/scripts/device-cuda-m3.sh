#!/usr/bin/env bash
# Milestone-3 device run (run tool, carry [".devdeps"]): build, every CUDA
# check (quantized KV cache vs the CPU QuantKvCache included), decode
# attention per layer for f16/k8v8/k4v4/k2v2, the model bench over KV modes
# at 131K and the longest context per mode. Logs under $OUT; a summary last.
# Each step has its own time limit so a slow one cannot eat the next.
set -o pipefail
cd "$(dirname "$0")/.."
source scripts/device-setup.sh
timeout 150 $T --gtest_filter='Cuda*:CudaQuant*:-Cuda.GemvSpeedReport:CudaQuant.DecodeAttentionSpeedReport' > $OUT/tests.log 2>&1
echo "tests rc $? at $(( $(date +%s) - t0 )) s"
grep -E "^quant |attention h|worst|FAILED|PASSED|Failure|Expected|Which is|error|differing record" $OUT/tests.log | head -60
timeout 90 $T --gtest_filter='CudaQuant.DecodeAttentionSpeedReport' > $OUT/attn_speed.log 2>&1
echo "attn speed rc $? at $(( $(date +%s) - t0 )) s"
grep -E "decode attention|FAILED|error" $OUT/attn_speed.log
timeout 100 $B bench --device cuda --synthetic llama3-8b --wtype q4_0 -d 32768,131072 --kv f16,k4v4,k2v2 -n 16 -p 0 > $OUT/bench.md 2>&1
echo "bench rc $? at $(( $(date +%s) - t0 )) s"
timeout 100 $B bench --device cuda --synthetic llama3-8b --wtype q4_0 -d 0 --kv f16,k4v4,k2v2 -n 16 -p 0 --max-ctx > $OUT/maxctx.md 2>&1
echo "max-ctx rc $? at $(( $(date +%s) - t0 )) s"
grep -E "^\|" $OUT/bench.md $OUT/maxctx.md | sed 's/^[^:]*\///'
grep -iE "error|fail" $OUT/bench.md $OUT/maxctx.md | head
echo "total: $(( $(date +%s) - t0 )) s"
