#!/usr/bin/env bash
# Milestone-14 device run (issue 4: the f16 decode block on tensor cores; run
# tool, carry [".devdeps"], kind nvidia-h200, one call of <= 560 s): build
# longkv-cli and longkv_tests, then
#  1. the CUDA checks (CHECK_FILTER, default every Cuda*, CudaQuant*,
#     CudaFlash* test but the speed reports), before anything is timed;
#  2. the llama3-8b Q4_0 decode bench once per LONGKV_CUDA_TUNING setting in
#     SETTINGS (space-separated; "-" = the shipped defaults), interleaved
#     PAIRS times (default 2), depths DEPTHS (0,131072), modes MODES (f16);
#  3. TIMELINE="setting ...": ncu's duration of each kernel of a few decode
#     layers (TL_COUNT launches after TL_SKIP) at depth TL_DEPTH (0), KV mode
#     TL_KV (f16), graphs off, one setting after the other -- which kernels a
#     setting makes slower or faster; the cache-filling kernels of a deep
#     synthetic context but the window rebuilds are not counted (ncu -k
#     regex; set TL_SKIP past those);
#  4. NCU="setting ...": ncu's speed-of-light, memory, scheduler and
#     occupancy sections for one decode-block launch at 131072 tokens.
# Small files under $OUT; a summary last.
set -o pipefail
cd "$(dirname "$0")/.."
TARGETS="${TARGETS:-longkv-cli longkv_tests}" source scripts/device-setup.sh || exit 1
source scripts/device-bench-pairs.sh
if [[ "${CHECKS:-1}" != 0 ]]; then
  timeout 240 stdbuf -oL $T --gtest_filter="${CHECK_FILTER:-Cuda*:CudaQuant*:CudaFlash*:-*SpeedReport*}" > $OUT/checks.log 2>&1
  echo "checks rc $? at $(( $(date +%s) - t0 )) s"
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[==========\]|Failure|Expected|Which is" $OUT/checks.log | head -30
  grep -E "^decode block" $OUT/checks.log | sed -E 's/ +:/:/; s/whole cache.*FMA staged/FMA staged/' | head -16
fi
settings=()
for s in ${SETTINGS:--}; do [[ $s == - ]] && settings+=("") || settings+=("$s"); done
MODES=${MODES:-f16} bench_pairs "${settings[@]}"
tl=0
for s in ${TIMELINE:-}; do
  [[ $s == - ]] && s=""
  LONGKV_CUDA_TUNING=$s LONGKV_CUDA_GRAPHS=0 timeout 120 ncu --clock-control none --metrics gpu__time_duration.sum \
    -k 'regex:^(?!.*(random_normal|quantize_groups))' \
    --launch-skip ${TL_SKIP:-400} --launch-count ${TL_COUNT:-24} \
    $B bench --device cuda --synthetic llama3-8b --wtype q4_0 -n 4 -p 0 -d ${TL_DEPTH:-0} --kv ${TL_KV:-f16} \
    > $OUT/timeline-$tl.txt 2>&1
  echo "timeline '$s' rc $? at $(( $(date +%s) - t0 )) s"
  awk '/^  [a-zA-Z_].*\(/ {n=$0; sub(/^ +(void )?/, "", n); sub(/[<(].*/, "", n); sub(/.*::/, "", n)}
       /gpu__time_duration.sum/ {printf "%-28s %s %s\n", n, $(NF-1), $NF}' \
    $OUT/timeline-$tl.txt | head -${TL_COUNT:-24}
  tl=$((tl + 1))
done
for s in ${NCU:-}; do
  [[ $s == - ]] && s=""
  S="--section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats"
  LONGKV_CUDA_TUNING=$s LONGKV_CUDA_GRAPHS=0 timeout 120 ncu --clock-control none $S -k regex:decode_block_kernel \
    --launch-skip 64 --launch-count 1 $B bench --device cuda --synthetic llama3-8b --wtype q4_0 -n 4 -p 0 -d 131072 \
    --kv f16 > "$OUT/ncu-$s.txt" 2>&1
  echo "ncu '$s' rc $? at $(( $(date +%s) - t0 )) s"
  grep -E "Duration|DRAM Throughput|Issue Slots|Registers Per|Achieved Occ|No Eligible|Eligible Warps|Grid Size|Waves|Shared Memory Configuration Size|Dynamic Shared" "$OUT/ncu-$s.txt" | head -16
done
echo "total: $(( $(date +%s) - t0 )) s"
