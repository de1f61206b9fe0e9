#!/usr/bin/env bash
# Milestone-2 device run (run tool, carry [".devdeps"]): build, every CUDA kernel
# against the CPU reference, GEMV speed per format, bench Q4_0/Q8_0, longest context.
# Logs under $OUT; a short table last.
set -o pipefail
cd "$(dirname "$0")/.."
source scripts/device-setup.sh
./build-device/tests/longkv_tests --gtest_filter='Cuda*' > $OUT/tests.log 2>&1
grep -E "nmse|worst|FAILED|PASSED|Failure|Expected|Which is|error" $OUT/tests.log | head -70
$B bench --device cuda --synthetic llama3-8b --wtype q4_0 -d 0,4096,32768,131072 --kv f16,k4v2 -p 512 -n 32 --max-ctx > $OUT/bench_q4_0.md 2>&1
$B bench --device cuda --synthetic llama3-8b --wtype q8_0 -d 0,4096,32768,131072 --kv f16 -p 512 -n 32 > $OUT/bench_q8_0.md 2>&1
echo "total: $(( $(date +%s) - t0 )) s"
grep -E "gemv " $OUT/tests.log
grep -E "^\|" $OUT/bench_q4_0.md $OUT/bench_q8_0.md | sed 's/^[^:]*bench_//'
grep -iE "error|fail" $OUT/bench_q4_0.md $OUT/bench_q8_0.md | head
