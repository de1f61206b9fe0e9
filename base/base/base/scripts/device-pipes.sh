#!/usr/bin/env bash
# Device run (run tool, carry [".devdeps"]): ncu pipe utilization, issue activity and shared-memory
# wavefronts of one v3 launch (k2v2 at 131,072 tokens) and one slab GEMV launch there, graphs off; full
# reports in $OUT/pipes-*.txt, the non-zero lines printed. cuda-notes milestone 23.
set -o pipefail
TARGETS=longkv-cli source scripts/device-setup.sh || exit 1
M='regex:sm__pipe_.*_cycles_active\.avg\.pct_of_peak_sustained_active,regex:sm__inst_executed_pipe_.*\.avg\.pct_of_peak_sustained_active,smsp__issue_active.avg.pct_of_peak_sustained_active,l1tex__data_pipe_lsu_wavefronts_mem_shared.sum,l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum,smsp__inst_executed.sum,sm__cycles_active.avg'
for k in quant_decode_v3 gemv_slab; do
  LONGKV_CUDA_GRAPHS=0 timeout 200 ncu --clock-control none --section ComputeWorkloadAnalysis --metrics "$M" \
    -k regex:$k --launch-skip 64 --launch-count 1 $B bench --device cuda --synthetic llama3-8b --wtype q4_0 -n 4 -p 0 \
    -d 131072 --kv k2v2 > $OUT/pipes-$k.txt 2>&1
  echo "== $k rc $?"
  grep -E "^\s+(sm__|smsp__|l1tex__)|Duration|Executed Ipc|Issue Slots|SM Busy" $OUT/pipes-$k.txt | awk '{v=$NF; $NF=""; printf "%-90s %s\n", $0, v}' | grep -vE " 0$| 0\.00$" | head -40
done
