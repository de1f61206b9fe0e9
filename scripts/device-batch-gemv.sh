#!/usr/bin/env bash
# Milestone 51, the batch GEMV's ring form (run tool, carry [".devdeps"], kind
# nvidia-h200, timeout <= 600 s): build; the batch GEMV and batched-step
# checks and the tuning keys' test; the GEMV speed report per setting in
# GEMV_SETTINGS (LONGKV_CUDA_TUNING, - = the defaults); ncu's duration, DRAM
# throughput and stall reasons of the batch GEMV kernels in a batched llama3-8b
# step (NCU_BATCH sequences at depth 4096, f16 KV) per setting in
# NCU_SETTINGS; then, unless BENCH=0, scripts/device-batch.sh's bench per
# setting in SETTINGS (MODES, DEPTHS, BATCH, NGEN as there); with CHECKS=1
# every other CUDA check last.
set -o pipefail
cd "$(dirname "$0")/.."
source scripts/device-setup.sh
CHECK_FILTER='CudaBatch*:Cuda.GemvBatch*:Cuda.Tuning*:-*SpeedReport*' run_checks
cp $OUT/checks.log $OUT/checks-gemv.log
for st in ${GEMV_SETTINGS:--}; do
  f=$OUT/gemv-${st//[^a-z0-9]/_}.log
  LONGKV_CUDA_TUNING=$([[ $st == - ]] || echo $st) timeout 60 $T --gtest_filter='Cuda.GemvBatchSpeedReport' > $f 2>&1
  echo "=== gemv batch speed, setting $st: rc $? at $(( $(date +%s) - t0 )) s"
  # one line a shape: us at 1, 2, 4, 8, 16, 24 and 32 tokens
  awk '/^gemv_batch q4_0/ { s = $3; if (s != last) { if (last) print line; line = s ":"; last = s }
    line = line " " $(NF - 3) } END { if (last) print line }' $f
done
METRICS=gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,l1tex__t_sector_hit_rate.pct
METRICS+=,lts__t_sector_hit_rate.pct,smsp__inst_executed.sum,launch__registers_per_thread
METRICS+=,sm__warps_active.avg.pct_of_peak_sustained_active
METRICS+=,smsp__issue_active.avg.pct_of_peak_sustained_active
for st in ${NCU_SETTINGS:-}; do
  f=$OUT/ncu-${st//[^a-z0-9]/_}.txt
  LONGKV_CUDA_TUNING=$([[ $st == - ]] || echo $st) timeout 120 ncu --clock-control none \
    --metrics "$METRICS,$(for r in long_scoreboard barrier wait short_scoreboard lg_throttle math_pipe_throttle \
      mio_throttle no_instruction not_selected selected; do
      printf 'smsp__average_warps_issue_stalled_%s_per_issue_active.ratio,' $r; done | sed 's/,$//')" \
    -k regex:gemv_batch --launch-skip 40 --launch-count ${NCU_COUNT:-5} \
    $B bench --device cuda --synthetic llama3-8b --wtype q4_0 -n 2 -p 0 -d 4096 --kv f16 --batch ${NCU_BATCH:-24} \
    > $f 2>&1
  echo "=== ncu, setting $st: rc $? at $(( $(date +%s) - t0 )) s"
  grep -E "gemv_batch_[a-z0-9]+_kernel|gpu__time|hit_rate|dram__|registers|warps_active|issue_(active|stalled)|inst_exec" \
    $f |
    sed -E 's/.*(gemv_batch_[a-z0-9]+_kernel<[^>]*>).*/\1/; s/smsp__average_warps_issue_stalled_//' |
    sed -E 's/_per_issue_active.ratio//' |
    awk '!/ratio|stalled/ || $NF+0 >= 0.1' | head -80
done
[[ "${BENCH:-1}" != 0 ]] && batch_bench
if [[ "${CHECKS:-0}" != 0 ]]; then  # every other CUDA check
  CHECK_FILTER='Cuda*:CudaQuant*:CudaFlash*:-*SpeedReport*:CudaBatch*:Cuda.GemvBatch*:Cuda.Tuning*' run_checks
fi
echo "total: $(( $(date +%s) - t0 )) s"
# Few files come back from the run tool: the logs as one archive.
(cd $OUT && tar czf logs.tgz --remove-files $(ls | grep -vE '^(logs.tgz|summary.txt)$'))
