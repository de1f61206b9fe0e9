#!/usr/bin/env bash
# Issue-4 summary run with the shipped defaults (run tool, carry [".devdeps"],
# kind nvidia-h200 or an H100, timeout <= 600 s): build, then
#  1. every CUDA check (Cuda*, CudaQuant*, CudaFlash*; speed reports left out)
#     - each kernel against the CPU reference before anything is timed;
#  2. the numbers docs/benchmarks.md records — synthetic llama3-8b Q4_0 decode
#     at depths 0 / 32K / 131K for f16, k4v4, k2v2 (random KV fill), prefill
#     pp512 at 32K with the attention TFLOP/s, and the longest context per mode;
#  3. the GPU perplexity of the evaluation model per KV mode (4 windows, run
#     before the benches; PPL_MODES), to compare with the CPU table in
#     docs/quality.md.
# The longest context is sized for an 80 GB card (--gpu-mem 81559 MiB, what an H100
# 80GB reports) on a larger card too; GPU_MEM=0 uses the whole card.
# CHECKS=0 / PPL=0 leave steps 1 / 3 out; TARGETS=longkv-cli builds the CLI only
# (then CHECKS=0).
set -o pipefail
cd "$(dirname "$0")/.."
source scripts/device-setup.sh
if [[ "${CHECKS:-1}" != 0 ]]; then
  timeout 240 stdbuf -oL ./build-device/tests/longkv_tests --gtest_filter='Cuda*:CudaQuant*:CudaFlash*:-*SpeedReport*' \
    > $OUT/tests.log 2>&1
  echo "checks rc $? at $(( $(date +%s) - t0 )) s"
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[==========\]|Failure" $OUT/tests.log | head -30
fi
# Perplexity before the benches: the parity with the CPU table is a bar, the
# benches are recorded (PPL_MODES: the modes compared).
if [[ "${PPL:-1}" != 0 ]]; then
  WINDOWS=4 CPU=0 MODES=${PPL_MODES:-f16,k8v8,k4v4,k2v2} timeout 200 bash scripts/device-ppl-check.sh > /dev/null 2>&1
  echo "=== ppl (rc $? at $(( $(date +%s) - t0 )) s)"; grep -E "^\|" $OUT/ppl-gpu.md
fi
timeout 100 $B bench --device cuda --synthetic llama3-8b --wtype q4_0 -d 0,32768,131072 --kv f16,k4v4,k2v2 -n 16 -p 0 > $OUT/decode.md 2>&1
echo "decode bench rc $? at $(( $(date +%s) - t0 )) s"
timeout 60 $B bench --device cuda --synthetic llama3-8b --wtype q4_0 -d 32768 --kv f16,k2v2 -n 0 -p 512 > $OUT/prefill.md 2>&1
echo "prefill bench rc $? at $(( $(date +%s) - t0 )) s"
timeout 120 $B bench --device cuda --synthetic llama3-8b --wtype q4_0 -d 0 --kv f16,k4v4,k2v2 -n 8 -p 0 --max-ctx --gpu-mem ${GPU_MEM:-81559} > $OUT/maxctx.md 2>&1
echo "max-ctx rc $? at $(( $(date +%s) - t0 )) s"
for f in decode prefill maxctx; do echo "=== $f"; grep -vE "^(bench|membw|load|info)" $OUT/$f.md | head -40; done
echo "total: $(( $(date +%s) - t0 )) s"
