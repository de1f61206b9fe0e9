#!/usr/bin/env bash
# Milestones 61 and 62 device run (run tool, carry [".devdeps"], kind
# nvidia-h200, timeout 600 s): the K-quant weights on the GPU. Builds, then
#  1. every CUDA check (Cuda*, CudaQuant*, CudaFlash*, CudaBatch*; speed
#     reports left out), each kernel against the CPU reference first;
#  2. Cuda.GemvSpeedReport (one GEMV per 8B shape: the slab kernel the engine
#     runs, and the rows kernel) into $OUT/gemv_speed.log;
#  3. decode of synthetic llama3-8b with every weight of one format
#     (WTYPES, default q2_k q3_k q4_k q5_k q6_k; q4_k_m and q5_k_m are llama.cpp's
#     mixes) at DEPTHS for f16 and k2v2, and (EXACT=1, the default) Q4_K
#     with exact f32 products (i8x=0: the form before milestone 61);
#  4. with FINAL=1, the issue-4 summary (scripts/device-final-bench.sh's
#     Q4_0 benches, CHECKS=0 PPL=0) after the above.
set -o pipefail
cd "$(dirname "$0")/.."
source scripts/device-setup.sh
CHECK_FILTER='Cuda*:CudaQuant*:CudaFlash*:CudaBatch*:-*SpeedReport*' run_checks
grep -E "^evalmodel Q[2-6]_K" $OUT/checks.log
timeout 80 $T --gtest_filter='Cuda.GemvSpeedReport' > $OUT/gemv_speed.log 2>&1
echo "gemv speed rc $? at $(( $(date +%s) - t0 )) s"
grep -E "^gemv (Q4_0|Q[2-6]_K)" $OUT/gemv_speed.log
for w in ${WTYPES:-q2_k q3_k q4_k q5_k q6_k}; do
  timeout 100 $B bench --device cuda --synthetic llama3-8b --wtype $w -d ${DEPTHS:-0,32768,131072} --kv f16,k2v2 -n 16 \
    -p 0 > $OUT/bench-$w.md 2>&1
  echo "=== $w: rc $? at $(( $(date +%s) - t0 )) s"; grep -E "^\| cuda" $OUT/bench-$w.md
done
if [[ "${EXACT:-1}" == 1 ]]; then
  LONGKV_CUDA_TUNING=i8x=0 timeout 100 $B bench --device cuda --synthetic llama3-8b --wtype q4_k \
    -d ${DEPTHS:-0,32768,131072} --kv f16,k2v2 -n 16 -p 0 > $OUT/bench-q4_k-i8x0.md 2>&1
  echo "=== q4_k i8x=0: rc $? at $(( $(date +%s) - t0 )) s"; grep -E "^\| cuda" $OUT/bench-q4_k-i8x0.md
fi
if [[ "${FINAL:-0}" == 1 ]]; then
  OUT=$OUT/final CHECKS=0 PPL=0 bash scripts/device-final-bench.sh | grep -vE "^(name|NVIDIA|Build|[A-Z][a-z]{2} )"
fi
echo "total: $(( $(date +%s) - t0 )) s"
