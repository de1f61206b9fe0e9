#!/usr/bin/env bash
# Flash-prefill device run (run tool, carry [".devdeps"], kind nvidia-h100-x1,
# timeout <= 300 s): build, the checks first (the flash kernel vs the double
# reference and vs the cuBLAS path, the existing attention and evalmodel
# checks, which now prefill through it), then one layer's prefill attention
# timed both ways (CudaFlash.PrefillSpeedReport) and the llama3-8b bench at
# pp512 over 32K with the flash kernel and with cuBLAS (LONGKV_CUDA_TUNING=flash=0)
# on the same card. Small logs under $OUT; a summary last.
set -o pipefail
cd "$(dirname "$0")/.."
export TARGETS="longkv_tests longkv-cli"
source scripts/device-setup.sh
timeout 60 stdbuf -oL $T \
  --gtest_filter='CudaFlash.PrefillMatchesReference:Cuda.AttentionMatchesReference:Cuda.EvalModelMatchesReferenceLogits' \
  > $OUT/tests.log 2>&1
echo "tests rc $? at $(( $(date +%s) - t0 )) s"
grep -E "^flash prefill|^attention h.* n_q [0-9]{2,}|^evalmodel|FAILED|PASSED|Failure|Expected|Which is|rror" \
  $OUT/tests.log | head -40
timeout 40 stdbuf -oL $T --gtest_filter='CudaFlash.PrefillSpeedReport' > $OUT/speed.log 2>&1
echo "speed report rc $? at $(( $(date +%s) - t0 )) s"
grep -E "^prefill attention|Failure|Expected|Which is|rror" $OUT/speed.log
BENCH="bench --device cuda --synthetic llama3-8b --wtype q4_0 -d 32768 --kv f16,k2v2 -n 0 -p 512"
timeout 40 $B $BENCH > $OUT/bench_flash.md 2>&1
echo "bench flash rc $? at $(( $(date +%s) - t0 )) s"
LONGKV_CUDA_TUNING=flash=0 timeout 40 $B $BENCH > $OUT/bench_cublas.md 2>&1
echo "bench cublas rc $? at $(( $(date +%s) - t0 )) s"
for f in bench_flash bench_cublas; do echo "== $f"; grep -E "^\||rror" $OUT/$f.md | head -8; done
echo "total: $(( $(date +%s) - t0 )) s"
