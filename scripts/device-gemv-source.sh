#!/usr/bin/env bash
# Milestone-31 probe profile (run tool, kind nvidia-h200, no carry; ~60 s of
# command time): where the down GEMV's 448-thread blocks wait, per SASS
# instruction. Builds bench/cuda_gemv_probe.cu, then ncu's warp-state,
# scheduler, occupancy and source-counter sections for one launch of the
# probe's dp4a 16-row kernel on 4096 x 14336 (launch-skip 1300 lands inside
# its timing loop: 4 accuracy launches, then 420 per form in the table's
# order), into $OUT/down16.ncu-rep, printed as details ($OUT/down16.txt) and
# per instruction ($OUT/down16-source.csv: executed instructions and stall
# samples per reason).
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
nvcc -O3 -std=c++17 -arch=sm_90 -Isrc -Iinclude -lineinfo -o /tmp/gp bench/cuda_gemv_probe.cu src/core/error.cpp \
  > $OUT/build.txt 2>&1 || { cat $OUT/build.txt; exit 1; }
/tmp/gp 4096 14336 | tail -3
S="--section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats --section SourceCounters"
timeout 200 ncu --clock-control none $S --import-source no -k regex:probe_kernel --launch-skip ${SKIP:-1300} \
  --launch-count 1 -o $OUT/down16 -f /tmp/gp 4096 14336 > $OUT/ncu.log 2>&1
echo "ncu rc $?"
ncu -i $OUT/down16.ncu-rep --page details --print-details all > $OUT/down16.txt 2>&1
ncu -i $OUT/down16.ncu-rep --page source --print-source sass --csv > $OUT/down16-source.csv 2>&1
gzip -f $OUT/down16-source.csv
rm -f $OUT/down16.ncu-rep
grep -E "probe_kernel|Duration|Registers|Achieved Occ|Warp Cycles Per Issued|Eligible Warps|No Eligible|Stall" $OUT/down16.txt |
  cut -c1-170 | head -40
