#!/usr/bin/env bash
# Milestone-31 probe profile (run tool, kind nvidia-h200, no carry; ~15 s of
# command time): where the down GEMV's 448-thread blocks wait, per SASS
# instruction. Builds bench/cuda_gemv_probe.cu, then ncu's warp-state,
# scheduler, occupancy and source-counter sections for one launch of the
# probe on 4096 x 14336, into $OUT/down16.ncu-rep, printed as details
# ($OUT/down16.txt) and per instruction ($OUT/down16-source.csv.gz: executed
# instructions and stall samples per reason). SKIP picks the launch: the
# probe makes 4 x 21 accuracy launches, then 420 per form in its table's
# order, so f32 8 rows 84-503, f32 16 504-923, dp4a 8 924-1343, dp4a 16
# 1344-1763 (the default, 1400), loads only 1764-2183, 8 rows x 2 sets
# 2184-2603, 448 x 2 2604-3023; then two more accuracy launches (3024-3065),
# the 16-row form with 8 rows early (milestone 32) 3066-3485, two accuracy
# launches (3486-3527), + coalesced x 3528-3947, + SwiGLU store 3948-4367.
# (Milestone 31's call 10 ran SKIP=1300: dp4a 8.)
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
nvcc -O3 -std=c++17 -arch=sm_90 -Isrc -Iinclude -lineinfo -o /tmp/gp bench/cuda_gemv_probe.cu src/core/error.cpp \
  > $OUT/build.txt 2>&1 || { cat $OUT/build.txt; exit 1; }
/tmp/gp 4096 14336 | tail -3
S="--section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats --section SourceCounters"
timeout 200 ncu --clock-control none $S --import-source no -k regex:probe_kernel --launch-skip ${SKIP:-1400} \
  --launch-count 1 -o $OUT/down16 -f /tmp/gp 4096 14336 > $OUT/ncu.log 2>&1
echo "ncu rc $?"
ncu -i $OUT/down16.ncu-rep --page details --print-details all > $OUT/down16.txt 2>&1
ncu -i $OUT/down16.ncu-rep --page source --print-source sass --csv > $OUT/down16-source.csv 2>&1
gzip -f $OUT/down16-source.csv
rm -f $OUT/down16.ncu-rep
grep -E "probe_kernel|Duration|Registers|Achieved Occ|Warp Cycles Per Issued|Eligible Warps|No Eligible|Stall" $OUT/down16.txt |
  cut -c1-170 | head -40
