#!/usr/bin/env bash
# Milestone-1 device run (run tool, carry [".devdeps"]): build, CUDA checks, bench; results under $OUT.
set -o pipefail
cd "$(dirname "$0")/.."
source scripts/device-setup.sh
./build-device/tests/longkv_tests --gtest_filter='Cuda*' 2>&1 | tee $OUT/tests.log | grep -E "nmse|worst|gemv|OK|FAIL|PASSED|SKIP|error" | head -90
./build-device/longkv bench --device cuda --synthetic llama3-8b --wtype q4_0 -d 0,4096,32768,131072 --kv f16 -p 512 -n 32 2>&1 | tee $OUT/bench_q4_0.md
./build-device/longkv bench --device cuda --synthetic llama3-8b --wtype q8_0 -d 0,32768 --kv f16 -p 512 -n 32 2>&1 | tee $OUT/bench_q8_0.md
echo "total: $(( $(date +%s) - t0 )) s"
