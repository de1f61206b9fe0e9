#!/usr/bin/env bash
# Milestone 50, batched decode (run tool, carry [".devdeps"], kind nvidia-h200,
# timeout <= 600 s): build; the batch checks first (the batch GEMV against the
# CPU rule, forward_batch against the CPU engine and against its sequences one
# by one); then `longkv bench --batch` for synthetic llama3-8b Q4_0 at DEPTHS
# (default 131072) for f16 and k2v2, B in BATCH (default 1,4,max; max sized
# for an 80 GB card, --gpu-mem 81559 MiB), beside the single-stream rows of
# the same call; then every other CUDA check (CHECKS=0 leaves them out).
set -o pipefail
cd "$(dirname "$0")/.."
source scripts/device-setup.sh
CHECK_FILTER='CudaBatch*:Cuda.GemvBatch*' run_checks
cp $OUT/checks.log $OUT/checks-batch.log
timeout 60 $T --gtest_filter='Cuda.GemvBatchSpeedReport' > $OUT/gemv-batch.log 2>&1
echo "gemv batch speed rc $? at $(( $(date +%s) - t0 )) s"; grep -E "^gemv_batch" $OUT/gemv-batch.log
batch_bench
if [[ "${CHECKS:-1}" != 0 ]]; then
  CHECK_FILTER='Cuda*:CudaQuant*:CudaFlash*:-*SpeedReport*:CudaBatch*:Cuda.GemvBatch*' run_checks
fi
echo "total: $(( $(date +%s) - t0 )) s"
