#!/usr/bin/env bash
# Milestone-31 device run (issue 4: v3's balance over the SMs; run tool,
# carry [".devdeps"], kind nvidia-h200, one call of <= 560 s): build
# longkv-cli (and longkv_tests with CHECKS=1), then
#  1. with CHECKS=1 the CUDA checks (CHECK_FILTER) before anything is timed;
#  2. NCU_SETTINGS="setting ...": per setting and depth in NCU_DEPTHS
#     (32768,131072), one v3 launch (k2v2, graphs off) under ncu: its
#     duration, the SMs' active cycles (mean, max, min against the elapsed),
#     instructions and shared-memory wavefronts ($OUT/ncu-<setting>-<depth>.txt);
#  3. NCU_GEMV_SETTINGS: the same for one layer's slab GEMVs at depth 0;
#  4. SETTINGS: the llama3-8b Q4_0 decode bench per setting, interleaved
#     PAIRS times (scripts/device-bench-pairs.sh).
set -o pipefail
cd "$(dirname "$0")/.."
source scripts/device-setup-checks.sh || exit 1
source scripts/device-bench-pairs.sh
M=gpu__time_duration.sum,sm__cycles_active.avg,sm__cycles_active.max,sm__cycles_active.min,gpc__cycles_elapsed.max
M=$M,smsp__inst_executed.sum,l1tex__data_pipe_lsu_wavefronts_mem_shared.sum,dram__bytes_read.sum
for s in ${NCU_SETTINGS:-}; do
  [[ $s == - ]] && s=""
  for d in ${NCU_DEPTHS:-32768 131072}; do
    f="$OUT/ncu-${s//[=,]/_}-$d.txt"
    LONGKV_CUDA_TUNING=$s LONGKV_CUDA_GRAPHS=0 timeout 120 ncu --clock-control none --metrics $M \
      -k regex:quant_decode_v3 --launch-skip 64 --launch-count 2 $B bench --device cuda --synthetic llama3-8b \
      --wtype q4_0 -n 4 -p 0 -d $d --kv k2v2 > "$f" 2>&1
    echo "ncu '$s' $d rc $? at $(( $(date +%s) - t0 )) s"
    awk '/quant_decode_v3/ {n++} n && /(gpu__time|sm__cycles|gpc__cycles|inst_executed|wavefronts|dram__bytes)/ \
         {printf "%s %s %s; ", $1, $(NF-1), $NF} END {print ""}' "$f" | sed 's/sm__cycles_active/act/g'
  done
done
# NCU_GEMV_SETTINGS="setting ...": ncu's duration of one layer's four slab
# GEMV launches (q|k|v, wo, gate|up, down) at depth 0, k2v2, graphs off.
for s in ${NCU_GEMV_SETTINGS:-}; do
  [[ $s == - ]] && s=""
  f="$OUT/ncu-gemv-${s//[=,]/_}.txt"
  LONGKV_CUDA_TUNING=$s LONGKV_CUDA_GRAPHS=0 timeout 120 ncu --clock-control none \
    --metrics gpu__time_duration.sum,dram__bytes_read.sum,launch__grid_size,launch__shared_mem_per_block_dynamic \
    -k regex:gemv_slab --launch-skip 256 --launch-count 8 $B bench --device cuda --synthetic llama3-8b \
    --wtype q4_0 -n 4 -p 0 -d 0 --kv k2v2 > "$f" 2>&1
  echo "ncu gemv '$s' rc $? at $(( $(date +%s) - t0 )) s"
  awk '/gemv_slab/ {n++} n && /(gpu__time|dram__bytes|grid_size|dynamic)/ {printf "%s %s; ", $NF, $(NF-1)} \
       n && /dynamic/ {print ""}' "$f" | head -8
done
settings=()
for s in ${SETTINGS:-}; do [[ $s == - ]] && settings+=("") || settings+=("$s"); done
[[ ${#settings[@]} -gt 0 ]] && DEPTHS=${DEPTHS:-32768,131072} bench_pairs "${settings[@]}"
echo "total: $(( $(date +%s) - t0 )) s"
