#!/usr/bin/env bash
# Milestone-5 device run (run tool, carry [".devdeps"], timeout <= 420 s):
# build, every CUDA check (incl. the fused-activation GEMV and graph replay
# vs direct decode), the GEMV speed report (rows vs slab kernel), decode
# attention per layer, and the llama3-8b Q4_0 bench: new kernels (graphs off
# and on, with pp512 at 32K for the attention TFLOP/s) and the milestone-4
# kernels (LONGKV_CUDA_TUNING=gemv_rows=0,fuse=0) as the same-card baseline.
# (Run 2026-11-28 with rows/fuse on by default; they are off now: set
# LONGKV_CUDA_TUNING=gemv_rows=1,fuse=1 on the "new" runs to repeat it.)
# SKIP_ATTN=1 skips the attention report. Logs under $OUT; a summary last.
set -o pipefail
cd "$(dirname "$0")/.."
source scripts/device-setup.sh
timeout 120 $T --gtest_filter='Cuda*:CudaQuant*:-Cuda.GemvSpeedReport:CudaQuant.DecodeAttentionSpeedReport' > $OUT/tests.log 2>&1
echo "tests rc $? at $(( $(date +%s) - t0 )) s"
grep -E "^quant |attention h|worst|graph replay|FAILED|PASSED|Failure|Expected|Which is|error|differing record" $OUT/tests.log | head -40
grep -E "^gemv act" $OUT/tests.log | sort -t: -k2 -g | tail -3
timeout 60 $T --gtest_filter='Cuda.GemvSpeedReport' > $OUT/gemv_speed.log 2>&1
echo "gemv speed rc $? at $(( $(date +%s) - t0 )) s"
grep -E "^gemv (Q4_0|Q8_0)" $OUT/gemv_speed.log
if [[ -z "${SKIP_ATTN:-}" ]]; then
  timeout 60 $T --gtest_filter='CudaQuant.DecodeAttentionSpeedReport' > $OUT/attn_speed.log 2>&1
  echo "attn speed rc $? at $(( $(date +%s) - t0 )) s"
  grep -E "decode attention" $OUT/attn_speed.log | tail -4
fi
BENCH="bench --device cuda --synthetic llama3-8b --wtype q4_0 --kv f16,k2v2 -n 16"
LONGKV_CUDA_GRAPHS=0 timeout 100 $B $BENCH -d 0,32768,131072 -p 512 > $OUT/bench_new.md 2> $OUT/bench_new.err
echo "bench new rc $? at $(( $(date +%s) - t0 )) s"
LONGKV_CUDA_GRAPHS=1 timeout 70 $B $BENCH -d 0,131072 -p 0 > $OUT/bench_new_graphs.md 2> $OUT/bench_new_graphs.err
echo "bench new+graphs rc $? at $(( $(date +%s) - t0 )) s"
LONGKV_CUDA_GRAPHS=0 LONGKV_CUDA_TUNING=gemv_rows=0,fuse=0 timeout 70 $B $BENCH -d 0,131072 -p 0 > $OUT/bench_m4.md 2>&1
echo "bench m4 kernels rc $? at $(( $(date +%s) - t0 )) s"
for f in bench_new bench_new_graphs bench_m4; do echo "== $f"; grep -E "^\| cuda|decode steps|kernels|bandwidth" $OUT/$f.md; done
grep -hE "graph captures" $OUT/bench_new_graphs.err | tail -4
grep -iE "error|fail" $OUT/bench_*.md $OUT/bench_*.err | head
echo "total: $(( $(date +%s) - t0 )) s"
