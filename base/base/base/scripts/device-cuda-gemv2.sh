#!/usr/bin/env bash
# Milestone-8b device run, RoPE in the q|k|v GEMV's store and column slices
# for the slab GEMV (run tool, carry [".devdeps"], kind nvidia-h100-x1, one
# call of <= 180 s): build longkv-cli and longkv_tests; the checks first
# (GEMV every format, fused activations, slab variants, fused RoPE vs
# rope_kernel, evalmodel logits, 40-step GPU-vs-CPU decode, graph replay,
# RoPE vs CPU) with the defaults, the model-level ones again with the RoPE
# fusion on (rope=1); then the llama3-8b Q4_0 bench (f16 KV, depth 0 and
# 131072) with the RoPE fusion off and on in the same call; then,
# while time is left, depth-0 runs with smaller slab slices (the down GEMV in
# two or three launches of fewer warps) and the model checks with one of them.
# Second call: PAIRS=3 SLICES="" (the off/on pair three times, interleaved).
# Small files under $OUT; a summary last.
set -o pipefail
cd "$(dirname "$0")/.."
TARGETS="${TARGETS:-longkv-cli longkv_tests}" source scripts/device-setup.sh
CHECKS='Cuda.MatmulMatchesReferenceEveryFormat:Cuda.FusedActivationGemvMatchesReference:Cuda.SlabGemvVariantsMatchReference:Cuda.GemvRopeMatchesSeparateKernel:Cuda.RopeMatchesCpuBothStylesFarPositions'
MODEL='Cuda.EvalModelMatchesReferenceLogits:Cuda.EvalModelDecodeMatchesCpuEngine:Cuda.GraphReplayMatchesDirectDecode'
left() { echo $(( ${BUDGET:-170} - ($(date +%s) - t0) )); }
timeout 60 stdbuf -oL $T --gtest_filter="$CHECKS:$MODEL" > $OUT/checks.log 2>&1
echo "checks (defaults) rc $? at $(( $(date +%s) - t0 )) s"
grep -E "worst|graph replay|FAILED|PASSED|Failure|Expected|Which is|rror|OK \]" $OUT/checks.log | head -40
grep -E "^gemv rope" $OUT/checks.log | sort -t: -k2 -g | tail -3
grep -E "^gemv rope" $OUT/checks.log | grep -vc " 0 rows differ" | sed 's/^/gemv rope lines with differing rows: /'
echo "=== LONGKV_CUDA_TUNING=rope=1" >> $OUT/checks.log
LONGKV_CUDA_TUNING=rope=1 timeout 40 stdbuf -oL $T --gtest_filter="$MODEL" >> $OUT/checks.log 2>&1
echo "model checks (rope=1) rc $? at $(( $(date +%s) - t0 )) s"
sed -n '/^=== LONGKV_CUDA_TUNING=rope=1/,$p' $OUT/checks.log | grep -E "FAILED|PASSED|nmse|Failure|error" | head
BENCH="bench --device cuda --synthetic llama3-8b --wtype q4_0 -n 16 -p 0 --kv f16"
: > $OUT/bench.md
run_bench() {  # tuning, args
  echo "=== LONGKV_CUDA_TUNING=$1 $2" >> $OUT/bench.md
  LONGKV_CUDA_TUNING=$1 timeout 40 $B $BENCH $2 >> $OUT/bench.md 2>&1
  echo "bench '$1' $2 rc $? at $(( $(date +%s) - t0 )) s"
}
# PAIRS=n: the off/on pair n times, interleaved (run-to-run spread is
# ~0.03 ms); SLICES="": no slice runs.
for ((i = 0; i < ${PAIRS:-1}; ++i)); do
  run_bench "rope=0" "-d 0,131072"
  run_bench "rope=1" "-d 0,131072"
done
for tn in ${SLICES-slice=224 rope=0 rope=1 slice=160}; do
  (( $(left) > 12 )) && run_bench "$tn" "-d 0"
done
if [[ -n "${SLICES-x}" ]] && (( $(left) > 25 )); then
  echo "=== LONGKV_CUDA_TUNING=slice=224" >> $OUT/checks.log
  LONGKV_CUDA_TUNING=slice=224 timeout $(( $(left) - 3 )) stdbuf -oL $T --gtest_filter="$MODEL" >> $OUT/checks.log 2>&1
  echo "model checks (slice=224) rc $? at $(( $(date +%s) - t0 )) s"
  sed -n '/^=== LONGKV_CUDA_TUNING=slice/,$p' $OUT/checks.log | grep -E "FAILED|PASSED|nmse|Failure" | head
fi
grep -E "^===|^\| cuda|kernels|bandwidth|rror" $OUT/bench.md
echo "total: $(( $(date +%s) - t0 )) s"
