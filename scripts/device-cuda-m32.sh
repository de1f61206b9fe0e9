#!/usr/bin/env bash
# Milestone-32 device run (issue 4: what bounds v3 per SM; run tool, carry
# [".devdeps"], kind nvidia-h200, one call of <= 400 s): build longkv-cli,
# then
#  1. the shared-memory bank metrics this ncu has ($OUT/bank-metrics.txt),
#     and one default v3 launch at NCU_DEPTH (131072) with them and with the
#     SM's pipe and shared-memory throughput (% of peak over active cycles);
#  2. NCU_SETTINGS="setting ...": per setting one v3 launch (k2v2, graphs off)
#     at NCU_DEPTH: duration, SM active cycles, warp instructions, shared
#     wavefronts (LSU) -- with the qfx probe bits (16 copies, 32 key B build,
#     64 key MMAs, 128 value B build, 256 value MMAs left out) against the
#     probe instantiation's own form ("qqs=0,khl"), how time moves with the
#     instructions and the wavefronts each part takes away.
# BANK=0 leaves step 1 out; EXTRA_METRICS (comma-separated ncu metrics) are
# added to step 2's (milestone 43: warps active, issue slots busy).
set -o pipefail
cd "$(dirname "$0")/.."
source scripts/device-setup-checks.sh || exit 1
D=${NCU_DEPTH:-131072}
run_v3() {  # setting, metrics, output file
  LONGKV_CUDA_TUNING=$1 LONGKV_CUDA_GRAPHS=0 timeout 120 ncu --clock-control none --metrics "$2" \
    -k regex:quant_decode_v3 --launch-skip 64 --launch-count 1 $B bench --device cuda --synthetic llama3-8b \
    --wtype q4_0 -n 4 -p 0 -d $D --kv k2v2 > "$3" 2>&1
  echo "ncu '$1' rc $? at $(( $(date +%s) - t0 )) s"
  awk '/quant_decode_v3/ {n++} n && /(__|sm__)/ {printf "%s %s; ", $1, $NF} END {print ""}' "$3" |
    sed 's/sm__cycles_active/act/g; s/l1tex__data_pipe_lsu_wavefronts_mem_shared/shw/g'
}
if [[ ${BANK:-1} != 0 ]]; then
ncu --query-metrics --chip gh100 > $OUT/all-metrics.txt 2>&1
grep -E "^(l1tex__data_bank|l1tex__data_pipe|smsp__inst_executed_pipe_lsu|l1tex__throughput|sm__pipe_shared)" \
  $OUT/all-metrics.txt | cut -c1-160 > $OUT/bank-metrics.txt
echo "bank metrics: $(wc -l < $OUT/bank-metrics.txt)"
MB=""
for m in l1tex__data_bank_reads l1tex__data_bank_writes l1tex__data_pipe_lsu_wavefronts l1tex__throughput \
         l1tex__data_pipe_lsu_wavefronts_mem_shared; do
  grep -qE "^$m " $OUT/all-metrics.txt && MB="$MB,$m.avg.pct_of_peak_sustained_active"
done
rm -f $OUT/all-metrics.txt
[[ -n $MB ]] && run_v3 "" "gpu__time_duration.sum,sm__cycles_active.avg${MB}" $OUT/ncu-bank.txt
fi
M=gpu__time_duration.sum,sm__cycles_active.avg,sm__cycles_active.max,smsp__inst_executed.sum
M=$M,l1tex__data_pipe_lsu_wavefronts_mem_shared.sum,dram__bytes_read.sum${EXTRA_METRICS:+,$EXTRA_METRICS}
for s in ${NCU_SETTINGS:-}; do
  [[ $s == - ]] && s=""
  run_v3 "$s" "$M" "$OUT/ncu-${s//[=,]/_}.txt"
done
echo "total: $(( $(date +%s) - t0 )) s"
