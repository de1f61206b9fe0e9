#!/usr/bin/env bash
# Milestone-46 device run (issue 4: what does a decode step made as a chain
# of kernels cost when its links do nothing but read their bytes? run tool,
# kind nvidia-h200; carry [".devdeps"] only with ENGINE=1):
#  1. builds bench/cuda_floor_probe.cu with nvcc alone and prints its table
#     ($OUT/floor-probe.md; ARGS: its arguments);
#  2. with ENGINE=1, the engine's step on the same card: the llama3-8b Q4_0
#     decode bench once per LONGKV_CUDA_TUNING setting in SETTINGS (default
#     "- sfx=2": the defaults, and the attention launches left out), MODES
#     (k2v2,f16) at DEPTHS (0,131072), PAIRS (1) interleaved rounds
#     (scripts/device-cuda-m16.sh's bench_pairs).
cd "$(dirname "$0")/.."
source scripts/device-probe-run.sh
probe_run floor || exit 1
if [[ ${ENGINE:-0} == 1 ]]; then
  SETTINGS=${SETTINGS:-"- sfx=2"} MODES=${MODES:-k2v2,f16} DEPTHS=${DEPTHS:-0,131072} PAIRS=${PAIRS:-1} \
    bash scripts/device-cuda-m16.sh
fi
echo "total: $(( $(date +%s) - t0 )) s"
