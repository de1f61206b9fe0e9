#!/usr/bin/env bash
# Milestone-8 device run, the decode step's fixed part (run tool, carry
# [".devdeps"], kind nvidia-h100-x1, timeout <= 420 s): build longkv-cli and
# longkv_tests; the checks first (GEMV every format, fused activations, the
# slab GEMV in both orders with and without PDL, evalmodel logits, 40-step
# GPU-vs-CPU decode, graph replay) with the new defaults, the model-level ones
# again with the pipelined GEMV off (PDL alone) and with PDL off; then the
# Q4_0 GEMV report (m2 / pipelined, plain / PDL) and the llama3-8b Q4_0 bench
# with milestone 7's settings and the new ones on the same card, plus depth-0
# runs that switch one feature at a time. Small files under $OUT; a summary last.
# SKIP_BENCH=1 leaves the model bench out; FULL_REPORT=1 adds Cuda.GemvSpeedReport.
set -o pipefail
cd "$(dirname "$0")/.."
TARGETS="${TARGETS:-longkv-cli longkv_tests}" source scripts/device-setup.sh
CHECKS='Cuda.MatmulMatchesReferenceEveryFormat:Cuda.FusedActivationGemvMatchesReference:Cuda.SlabGemvVariantsMatchReference'
MODEL='Cuda.EvalModelMatchesReferenceLogits:Cuda.EvalModelDecodeMatchesCpuEngine:Cuda.GraphReplayMatchesDirectDecode'
timeout 150 stdbuf -oL $T --gtest_filter="$CHECKS:$MODEL" > $OUT/checks.log 2>&1
echo "checks (defaults) rc $? at $(( $(date +%s) - t0 )) s"
for tn in pipe=0 pdl=0; do
  echo "=== LONGKV_CUDA_TUNING=$tn" >> $OUT/checks.log
  LONGKV_CUDA_TUNING=$tn timeout 60 stdbuf -oL $T --gtest_filter="$MODEL" >> $OUT/checks.log 2>&1
  echo "model checks ($tn) rc $? at $(( $(date +%s) - t0 )) s"
done
grep -E "^===|worst|graph replay|FAILED|PASSED|Failure|Expected|Which is|rror" $OUT/checks.log | head -40
grep -E "^slab gemv" $OUT/checks.log | sort -t: -k2 -g | tail -2
grep -E "^gemv act|^matmul" $OUT/checks.log | sort -t: -k2 -g | tail -2
timeout 60 stdbuf -oL $T --gtest_filter='Cuda.GemvPipelineSpeedReport' > $OUT/gemv.log 2>&1
echo "gemv report rc $? at $(( $(date +%s) - t0 )) s"
grep -E "^gemv q4_0" $OUT/gemv.log
if [[ -z "${SKIP_BENCH:-}" ]]; then
  BENCH="bench --device cuda --synthetic llama3-8b --wtype q4_0 -n 16 -p 0"
  : > $OUT/bench.md
  # milestone 7's settings, then the new defaults; then depth 0 one feature at a time.
  for cfg in "-d 0,131072 --kv f16,k2v2|pipe=0,pdl=0" "-d 0,131072 --kv f16,k2v2|" "-d 0 --kv f16|pdl=0" \
             "-d 0 --kv f16|pipe=0"; do
    args=${cfg%%|*} tn=${cfg#*|}
    echo "=== LONGKV_CUDA_TUNING=$tn $args" >> $OUT/bench.md
    LONGKV_CUDA_TUNING=$tn timeout 60 $B $BENCH $args >> $OUT/bench.md 2>&1
    echo "bench '$tn' $args rc $? at $(( $(date +%s) - t0 )) s"
  done
  grep -E "^===|^\| cuda|kernels|bandwidth|rror" $OUT/bench.md
fi
if [[ -n "${FULL_REPORT:-}" ]]; then
  timeout 60 stdbuf -oL $T --gtest_filter='Cuda.GemvSpeedReport' > $OUT/gemv_full.log 2>&1
  echo "full gemv report rc $? at $(( $(date +%s) - t0 )) s"
  grep -E "^gemv Q4_0" $OUT/gemv_full.log
fi
echo "total: $(( $(date +%s) - t0 )) s"
