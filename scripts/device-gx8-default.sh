#!/usr/bin/env bash
# Milestone-39 device run (issue 4: whether gx8's one kernel can be the
# default; run tool, carry [".devdeps"], kind nvidia-h200, one call of <= 560
# s): builds longkv-cli and longkv_tests, then
#  1. every CUDA check with the defaults ($OUT/checks.log);
#  2. the llama3-8b Q4_0 decode bench for the defaults and each
#     LONGKV_CUDA_TUNING setting in SETTINGS (default "gx8=35 gx8=99"),
#     interleaved PAIRS (3) times, modes MODES (f16,k4v4,k2v2), depths DEPTHS
#     (0,32768,131072) (scripts/device-bench-pairs.sh);
#  3. CudaTuning::gemv_x8's default set to GX8 (35) in this copy of the tree
#     (the device's copy: nothing comes back), longkv_tests rebuilt, and every
#     CUDA check again with it as the default, so that the tests which reset
#     the tuning to its defaults keep it too ($OUT/checks-gx8.log).
set -o pipefail
cd "$(dirname "$0")/.."
CHECKS=1 source scripts/device-setup-checks.sh || exit 1
source scripts/device-bench-pairs.sh
MODES=${MODES:-f16,k4v4,k2v2} DEPTHS=${DEPTHS:-0,32768,131072} PAIRS=${PAIRS:-3} bench_pairs "" ${SETTINGS:-gx8=35 gx8=99}
GX8=${GX8:-35}
sed -i "s/int gemv_x8 = 0;/int gemv_x8 = $GX8;/" src/backend/cuda/cuda_backend.h
grep -q "int gemv_x8 = $GX8;" src/backend/cuda/cuda_backend.h || { echo "the default was not set"; exit 1; }
cmake --build build-device --target longkv_tests > $OUT/build-gx8.log 2>&1 || { grep -E "error" $OUT/build-gx8.log | head; exit 1; }
echo "rebuilt with gemv_x8 = $GX8 at $(( $(date +%s) - t0 )) s"
timeout 240 stdbuf -oL $T --gtest_filter="${CHECK_FILTER:-Cuda*:CudaQuant*:CudaFlash*:-*SpeedReport*}" \
  > $OUT/checks-gx8.log 2>&1
echo "checks with gemv_x8 = $GX8 as the default: rc $? at $(( $(date +%s) - t0 )) s"
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[==========\]|Failure|Expected|Which is" $OUT/checks-gx8.log | head -30
echo "total: $(( $(date +%s) - t0 )) s"
