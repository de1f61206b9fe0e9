#!/usr/bin/env bash
# Milestone-43 device run (issue 4: why v3's copies and its per-group work
# overlap only in part; run tool, kind nvidia-h200, no carry needed):
#  1. builds bench/cuda_copy_probe.cu with nvcc alone and prints its whole
#     table ($OUT/copy-probe.md);
#  2. profiles single rows of it under ncu with the metrics milestone 43 took
#     for v3 (scripts/device-cuda-m32.sh): duration, SM active cycles (mean,
#     max, min), elapsed cycles, warp instructions, DRAM bytes, warps active
#     and issue slots busy -- one launch after the row's 3 untimed ones, so
#     caches flushed and clocks free as for v3. ROWS: ';'-separated argument
#     lists of `copy_probe S BLOCKS WORK [mix] [v3] [nocopy]`.
# With ENGINE=1 it then runs v3's own skeleton rows the same way
# (scripts/device-cuda-m32.sh with qfx=482 and qfx=498; needs carry
# [".devdeps"] and ~2 more minutes for the build).
set -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
t0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
nvcc -O3 -std=c++17 -arch=sm_90 -Isrc -Iinclude -Ibench -o /tmp/copy_probe bench/cuda_copy_probe.cu || exit 1
/tmp/copy_probe > "$OUT/copy-probe.md" || { tail -3 "$OUT/copy-probe.md"; exit 1; }
echo "table at $(( $(date +%s) - t0 )) s"
M=gpu__time_duration.sum,sm__cycles_active.avg,sm__cycles_active.max,sm__cycles_active.min,gpc__cycles_elapsed.max
M=$M,smsp__inst_executed.sum,dram__bytes_read.sum,sm__warps_active.avg.per_cycle_active
M=$M,smsp__issue_active.avg.per_cycle_active
IFS=';' read -ra rows <<< "${ROWS:-3 376 0;3 376 32 mix;3 376 32 mix nocopy;3 376 400;3 376 400 nocopy;3 376 0 v3}"
for r in "${rows[@]}"; do
  f="$OUT/ncu-copy-${r// /_}.txt"
  # shellcheck disable=SC2086  # the row is a word list
  timeout 120 ncu --clock-control none --metrics "$M" -k regex:ring_kernel --launch-skip 3 --launch-count 1 \
    /tmp/copy_probe $r > "$f" 2>&1
  echo "== $r (rc $?, $(( $(date +%s) - t0 )) s)"
  awk '/ring_kernel/ {n++} n && /(__|sm__)/ {printf "%s %s; ", $1, $NF} END {print ""}' "$f" |
    sed 's/sm__cycles_active/act/g'
done
if [[ ${ENGINE:-0} == 1 ]]; then
  BANK=0 EXTRA_METRICS=sm__cycles_active.min,gpc__cycles_elapsed.max,sm__warps_active.avg.per_cycle_active \
    NCU_SETTINGS="qfx=482 qfx=498" bash scripts/device-cuda-m32.sh
fi
grep -E "^\|" "$OUT/copy-probe.md"
echo "total: $(( $(date +%s) - t0 )) s"
