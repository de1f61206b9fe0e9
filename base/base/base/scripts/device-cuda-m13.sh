#!/usr/bin/env bash
# Milestone-13 device run (issue 4: the Q4_0 GEMV with int8 activations; run
# tool, carry [".devdeps"], kind nvidia-h200, one call of <= 560 s): build
# longkv-cli and longkv_tests, then
#  1. every CUDA check (Cuda*, CudaQuant*, CudaFlash*; speed reports left out),
#     before anything is timed;
#  2. the GEMV report (Q4_0, per llama3-8b shape; f32 products and int8 x);
#  3. the llama3-8b Q4_0 decode bench, int8 x off (OLD=i8x=0) and the shipped
#     defaults (NEW), interleaved PAIRS times (default 2), depths DEPTHS
#     (0,131072), modes MODES (f16,k2v2); MORE="astg=2 ..." adds settings to
#     each round;
#  4. NCU=1: ncu's speed-of-light, memory, scheduler and warp-state sections
#     for one launch of the f16 decode-block kernel and one of the quantized
#     (v3) decode kernel at 131072 tokens, to say what bounds them.
# CHECKS=0 skips 1 (CHECK_FILTER: another gtest filter), GEMV=0 skips 2,
# NCU_KERNELS="mode:kernel-regex ..." picks step 4's kernels. Small files under $OUT; a summary last.
set -o pipefail
cd "$(dirname "$0")/.."
TARGETS="${TARGETS:-longkv-cli longkv_tests}" source scripts/device-setup.sh || exit 1
source scripts/device-bench-pairs.sh
OLD="${OLD:-i8x=0}"
if [[ "${CHECKS:-1}" != 0 ]]; then
  timeout 240 stdbuf -oL $T --gtest_filter="${CHECK_FILTER:-Cuda*:CudaQuant*:CudaFlash*:-*SpeedReport*}" > $OUT/checks.log 2>&1
  echo "checks rc $? at $(( $(date +%s) - t0 )) s"
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[==========\]|Failure|Expected|Which is" $OUT/checks.log | head -30
  grep -E "int8 x|i8x 1|^decode block" $OUT/checks.log | head -30
fi
if [[ "${GEMV:-1}" != 0 ]]; then
  timeout 60 stdbuf -oL $T --gtest_filter='Cuda.GemvPipelineSpeedReport' > $OUT/gemv.log 2>&1
  echo "gemv report rc $? at $(( $(date +%s) - t0 )) s"
  grep -E "pipe\+pdl|i8x" $OUT/gemv.log | head -16
fi
bench_pairs "$OLD" "${NEW:-}" ${MORE:-}
if [[ "${NCU:-1}" != 0 ]] && command -v ncu > /dev/null; then
  S="--section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats"
  for k in ${NCU_KERNELS:-f16:decode_block_kernel k2v2:quant_decode_v3_kernel}; do
    LONGKV_CUDA_GRAPHS=0 timeout 120 ncu --clock-control none $S -k regex:${k#*:} --launch-skip 64 --launch-count 1 \
      $B bench --device cuda --synthetic llama3-8b --wtype q4_0 -n 4 -p 0 -d 131072 --kv ${k%%:*} > $OUT/ncu-${k%%:*}.txt 2>&1
    echo "ncu ${k%%:*} rc $? at $(( $(date +%s) - t0 )) s"
    grep -E "Duration|DRAM Throughput|Memory Throughput|Issue Slots|Registers Per|Achieved Occ|Theoretical Occ|No Eligible|Active Warps Per|Eligible Warps|Grid Size|Block Size|Waves" $OUT/ncu-${k%%:*}.txt | head -20
  done
fi
echo "total: $(( $(date +%s) - t0 )) s"
