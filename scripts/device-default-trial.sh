#!/usr/bin/env bash
# A CudaTuning default on trial (issue 4; run tool, carry [".devdeps"], kind
# nvidia-h200, one call of <= 560 s): builds longkv-cli and longkv_tests, then
#  1. every CUDA check with the defaults ($OUT/checks.log);
#  2. the llama3-8b Q4_0 decode bench for the defaults and each
#     LONGKV_CUDA_TUNING setting in SETTINGS, interleaved PAIRS (3) times,
#     modes MODES (f16,k4v4,k2v2), depths DEPTHS (0,32768,131072)
#     (scripts/device-bench-pairs.sh);
#  3. with FIELD and VALUE set: `int FIELD = ...;` in CudaTuning
#     (cuda_backend.h) set to VALUE in this copy of the tree (the device's
#     copy: nothing comes back), longkv_tests rebuilt, and every CUDA check
#     again with it as the default, so that the tests which reset the tuning
#     to its defaults keep it too ($OUT/checks-trial.log).
set -o pipefail
cd "$(dirname "$0")/.."
CHECKS=1 source scripts/device-setup-checks.sh || exit 1
source scripts/device-bench-pairs.sh
MODES=${MODES:-f16,k4v4,k2v2} DEPTHS=${DEPTHS:-0,32768,131072} PAIRS=${PAIRS:-3} bench_pairs "" $SETTINGS
[[ -n "$FIELD" && -n "$VALUE" ]] || { echo "total: $(( $(date +%s) - t0 )) s"; exit 0; }
sed -i -E "s/int $FIELD = [0-9]+;/int $FIELD = $VALUE;/" src/backend/cuda/cuda_backend.h
grep -q "int $FIELD = $VALUE;" src/backend/cuda/cuda_backend.h || { echo "the default was not set"; exit 1; }
cmake --build build-device --target longkv_tests > $OUT/build-trial.log 2>&1 || { grep -E "error" $OUT/build-trial.log | head; exit 1; }
echo "rebuilt with $FIELD = $VALUE at $(( $(date +%s) - t0 )) s"
timeout 240 stdbuf -oL $T --gtest_filter="${CHECK_FILTER:-Cuda*:CudaQuant*:CudaFlash*:-*SpeedReport*}" \
  > $OUT/checks-trial.log 2>&1
echo "checks with $FIELD = $VALUE as the default: rc $? at $(( $(date +%s) - t0 )) s"
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[==========\]|Failure|Expected|Which is" $OUT/checks-trial.log | head -30
echo "total: $(( $(date +%s) - t0 )) s"
