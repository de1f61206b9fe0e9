#!/usr/bin/env bash
# Milestone-38 device run (issue 4: why a GEMV whose code is not the step's
# usual GEMV code loses behind v3; run tool, carry [".devdeps"], kind
# nvidia-h200, one call of <= 560 s): builds longkv-cli, then for each
# LONGKV_CUDA_TUNING setting in SETTINGS ("-" = the defaults) ncu's
# duration, instructions and every stall reason per issued instruction for
# COUNT (4) launches matching K (regex:gemv_slab) after SKIP (64: layer 16's
# q|k|v, wo, gate|up and down), KV mode KV (k2v2) at DEPTH (131072), graphs
# off, caches not flushed and each pass a run of the whole bench
# (--cache-control none --replay-mode application: every pass finds L2 and
# the instruction caches as the kernels before it left them, not as its own
# previous pass did), into $OUT/ncu-SETTING.txt, and a summary (ratios of at
# least 0.05).
set -o pipefail
cd "$(dirname "$0")/.."
TARGETS=longkv-cli source scripts/device-setup.sh || exit 1
for s in ${SETTINGS:--}; do
  f="$OUT/ncu-${s//[=,]/_}.txt"
  [[ $s == - ]] && s=""
  LONGKV_CUDA_TUNING=$s LONGKV_CUDA_GRAPHS=0 timeout 240 ncu --clock-control none --cache-control none \
    --replay-mode application --metrics "gpu__time_duration.sum,smsp__inst_executed.sum,$(for r in no_instruction imc_miss long_scoreboard barrier wait branch_resolving \
      short_scoreboard lg_throttle math_pipe_throttle mio_throttle dispatch_stall drain membar misc not_selected \
      selected sleeping tex_throttle; do printf 'smsp__average_warps_issue_stalled_%s_per_issue_active.ratio,' $r; done |
      sed 's/,$//')" -k "${K:-regex:gemv_slab}" --launch-skip ${SKIP:-64} --launch-count ${COUNT:-4} \
    $B bench --device cuda --synthetic llama3-8b --wtype q4_0 -n 4 -p 0 -d ${DEPTH:-131072} --kv ${KV:-k2v2} > "$f" 2>&1
  echo "=== '$s': ncu rc $? at $(( $(date +%s) - t0 )) s"
  grep -E "gemv_slab_kernel|Duration|Warp Cycles Per Issued|No Eligible|issue_stalled|Executed Instructions  " "$f" |
    sed -E 's/.*gemv_slab_kernel<([^>]*)>.*/kernel <\1>/; s/smsp__average_warps_issue_stalled_//; s/_per_issue_active.ratio//' |
    awk '$NF+0 >= 0.05 || !/ratio|inst/' | head -120
done
echo "total: $(( $(date +%s) - t0 )) s"
