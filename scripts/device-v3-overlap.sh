#!/usr/bin/env bash
# Milestone-44 device run (issue 4: why v3's copies and its skeleton's work
# overlap only in part, where the copy probe's overlap; run tool, carry
# [".devdeps"], kind nvidia-h200, one call of ~4 min):
#  1. scripts/device-cuda-m32.sh (BANK=0) over V3_SETTINGS: one v3 launch at
#     131K (k2v2) under ncu per qfx setting -- duration, SM active cycles
#     (mean, max, min), elapsed cycles, warp instructions, shared wavefronts,
#     DRAM bytes, issue slots busy. The default bisects the skeleton
#     (qfx=482: copies, (s, z) preparation, key code word loads and the
#     per-head constant's shuffles, online softmax, loop) by milestone 44's
#     bits 512, 1024 and 2048, with and without its copies (16);
#  2. ncu's warp-state and scheduler sections for one v3 launch per
#     STALL_SETTINGS, and for the copy probe's rows STALL_ROWS (`copy_probe S
#     BLOCKS WORK [mix] [v3] [nocopy]`), into $OUT/stall-*.txt, with the stall
#     reasons printed.
set -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
# Sourced, so that B and LD_LIBRARY_PATH (device-setup.sh) hold below too.
BANK=0 EXTRA_METRICS=sm__cycles_active.min,gpc__cycles_elapsed.max,smsp__issue_active.avg.per_cycle_active \
  NCU_SETTINGS="${V3_SETTINGS:-qfx=482 qfx=994 qfx=1506 qfx=2530 qfx=4066 qfx=498 qfx=4082}" \
  source scripts/device-cuda-m32.sh || exit 1
S="--section WarpStateStats --section SchedulerStats"
stalls() {  # the report's stall lines, shortest first
  grep -E "Stall|Warp Cycles Per|Issued Warp|Eligible|No Eligible|One or More|Duration" "$1" | tr -s ' ' | head -30
}
for s in ${STALL_SETTINGS:-qfx=482 qfx=498}; do
  f="$OUT/stall-v3-${s//[=,]/_}.txt"
  LONGKV_CUDA_TUNING=$s LONGKV_CUDA_GRAPHS=0 timeout 150 ncu --clock-control none $S --print-details all \
    -k regex:quant_decode_v3 --launch-skip 64 --launch-count 1 $B bench --device cuda --synthetic llama3-8b \
    --wtype q4_0 -n 4 -p 0 -d 131072 --kv k2v2 > "$f" 2>&1
  echo "== v3 $s (rc $?)"; stalls "$f"
done
nvcc -O3 -std=c++17 -arch=sm_90 -Isrc -Iinclude -Ibench -o /tmp/copy_probe bench/cuda_copy_probe.cu || exit 1
IFS=';' read -ra rows <<< "${STALL_ROWS:-3 376 400;3 376 400 nocopy;3 376 32 mix}"
for r in "${rows[@]}"; do
  f="$OUT/stall-copy-${r// /_}.txt"
  # shellcheck disable=SC2086  # the row is a word list
  timeout 120 ncu --clock-control none $S --print-details all -k regex:ring_kernel --launch-skip 3 --launch-count 1 \
    /tmp/copy_probe $r > "$f" 2>&1
  echo "== copy_probe $r (rc $?)"; stalls "$f"
done
# The run tool brings back only so many files: one file per kind.
for k in ncu stall; do
  for f in "$OUT/$k"-*.txt; do echo "##### $f"; cat "$f"; done > "$OUT/all-$k.log" && rm -f "$OUT/$k"-*.txt
done
