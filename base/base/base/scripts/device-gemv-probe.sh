#!/usr/bin/env bash
# Milestone-13 probe run (run tool, kind nvidia-h200, no carry; ~25 s of
# command time): builds bench/cuda_gemv_probe.cu with nvcc, prints its table
# twice (run-to-run spread), then ncu's speed-of-light, memory, scheduler,
# warp-state, occupancy and compute sections for single launches: the f32-dot
# kernel and the int8 (dp4a) one on gate|up (28672 x 4096; launch-skip 50 /
# 900 land inside their timing loops), the f32 one on wo (4096 x 4096).
# Outputs under $OUT.
set -x
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem --format=csv > $OUT/env.txt
nvcc -O3 -std=c++17 -arch=sm_90 -Isrc -Iinclude -Xptxas -v -o /tmp/gp bench/cuda_gemv_probe.cu > $OUT/ptxas.txt 2>&1 || { cat $OUT/ptxas.txt; exit 1; }
/tmp/gp | tee $OUT/probe.md
/tmp/gp | tee $OUT/probe2.md
S="--section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats --section ComputeWorkloadAnalysis"
timeout 150 ncu --clock-control none $S -k regex:probe_kernel --launch-skip 50 --launch-count 1 /tmp/gp 28672 4096 > $OUT/ncu_f32_gateup.txt 2>&1
timeout 150 ncu --clock-control none $S -k regex:probe_kernel --launch-skip 900 --launch-count 1 /tmp/gp 28672 4096 > $OUT/ncu_dp4a_gateup.txt 2>&1
timeout 100 ncu --clock-control none $S -k regex:probe_kernel --launch-skip 50 --launch-count 1 /tmp/gp 4096 4096 > $OUT/ncu_f32_wo.txt 2>&1
grep -E "Duration|Memory Throughput|DRAM Throughput|Issue Slots|Registers|Achieved Occupancy|Theoretical Occ|Issued Warp|No Eligible|Active Warps|Eligible Warps|Block Limit" $OUT/ncu_*.txt | head -90
