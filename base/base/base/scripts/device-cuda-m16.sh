#!/usr/bin/env bash
# Milestone-16 device run (issue 4: where the two-launch quantized step's v3
# kernel spends its time at depth; run tool, carry [".devdeps"], kind
# nvidia-h200, one call of <= 560 s): build longkv-cli (and longkv_tests
# with CHECKS=1), then
#  1. with CHECKS=1 the CUDA checks (CHECK_FILTER, default every Cuda*,
#     CudaQuant*, CudaFlash* test but the speed reports) before anything is
#     timed;
#  2. the SASS of the v3 kernel for k2v2, head_dim 128, 4 query heads per KV
#     head, 3 stages ($OUT/v3.sass) and its instruction mix by opcode;
#  3. NCU_SETTINGS="setting ...": ncu's duration of NCU_COUNT (4) launches of
#     the v3 kernel and of the decode block at depth NCU_DEPTH (131072), KV
#     mode NCU_KV (k2v2), graphs off, one LONGKV_CUDA_TUNING setting after the
#     other ("-" = defaults; qfx=N switches parts off, wrong results);
#  4. DETAIL="setting ...": ncu's speed-of-light, scheduler, warp-state,
#     instruction and source-counter sections for one v3 launch there;
#  5. SOURCE=1: one v3 launch there profiled into $OUT/v3.ncu-rep, printed
#     as the warp-state details ($OUT/v3-details.txt) and per SASS
#     instruction ($OUT/v3-source.csv: executed instructions, stall samples,
#     excess shared wavefronts);
#  6. the llama3-8b Q4_0 decode bench once per setting in SETTINGS,
#     interleaved PAIRS times (scripts/device-bench-pairs.sh).
# Small files under $OUT (a setting's '=' and ',' become '_' in their names:
# the run tool does not bring back names with '='); a summary last.
set -o pipefail
cd "$(dirname "$0")/.."
source scripts/device-setup-checks.sh || exit 1
source scripts/device-bench-pairs.sh
obj=build-device/CMakeFiles/longkv.dir/src/backend/cuda/kv_quant_decode_v3.cu.o
cuobjdump -sass "$obj" 2>/dev/null | awk '/Function : /{p = /quant_decode_v3_kernelILi128ELi4ELi2ELi2ELi3E/} p' > $OUT/v3.sass
echo "v3 SASS: $(grep -cE '^\s+/\*[0-9a-f]{4}\*/' $OUT/v3.sass) instructions"
grep -oE '^\s+/\*[0-9a-f]{4}\*/\s+(@!?U?P[0-9T] )?[A-Z0-9_]+' $OUT/v3.sass | awk '{print $NF}' | sed 's/\..*//' |
  sort | uniq -c | sort -rn | head -25 | tr '\n' ' '; echo
K='regex:quant_decode_v3|decode_block_kernel'
for s in ${NCU_SETTINGS:-}; do
  [[ $s == - ]] && s=""
  LONGKV_CUDA_TUNING=$s LONGKV_CUDA_GRAPHS=0 timeout 150 ncu --clock-control none --metrics gpu__time_duration.sum \
    -k "$K" --launch-skip 64 --launch-count $((2 * ${NCU_COUNT:-4})) $B bench --device cuda --synthetic llama3-8b \
    --wtype q4_0 -n 4 -p 0 -d ${NCU_DEPTH:-131072} --kv ${NCU_KV:-k2v2} > "$OUT/ncu-dur-${s//[=,]/_}.txt" 2>&1
  echo "ncu '$s' rc $? at $(( $(date +%s) - t0 )) s"
  awk '/^  [a-zA-Z_].*\(/ {n=$0; sub(/^ +(void )?/, "", n); sub(/[<(].*/, "", n); sub(/.*::/, "", n)}
       /gpu__time_duration.sum/ {printf "%s %s; ", n, $NF}' "$OUT/ncu-dur-${s//[=,]/_}.txt"; echo
done
for s in ${DETAIL:-}; do
  [[ $s == - ]] && s=""
  S="--section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats --section InstructionStats --section SourceCounters"
  LONGKV_CUDA_TUNING=$s LONGKV_CUDA_GRAPHS=0 timeout 150 ncu --clock-control none $S -k regex:quant_decode_v3 \
    --launch-skip 64 --launch-count 1 $B bench --device cuda --synthetic llama3-8b --wtype q4_0 -n 4 -p 0 \
    -d ${NCU_DEPTH:-131072} --kv ${NCU_KV:-k2v2} > "$OUT/ncu-detail-${s//[=,]/_}.txt" 2>&1
  echo "ncu detail '$s' rc $? at $(( $(date +%s) - t0 )) s"
  grep -E "Duration|DRAM Throughput|Issue Slots|Executed Ipc|Registers Per|Achieved Occ|No Eligible|Eligible Warps|Waves|Stall" "$OUT/ncu-detail-${s//[=,]/_}.txt" | head -24
done
if [[ ${SOURCE:-0} == 1 ]]; then
  LONGKV_CUDA_GRAPHS=0 timeout 200 ncu --clock-control none --section WarpStateStats --section SourceCounters \
    --section SchedulerStats --import-source no -k regex:quant_decode_v3 --launch-skip 64 --launch-count 1 \
    -o $OUT/v3 -f $B bench --device cuda --synthetic llama3-8b --wtype q4_0 -n 4 -p 0 -d ${NCU_DEPTH:-131072} \
    --kv ${NCU_KV:-k2v2} > $OUT/v3-profile.log 2>&1
  echo "ncu source rc $? at $(( $(date +%s) - t0 )) s"
  ncu -i $OUT/v3.ncu-rep --page details --print-details all > $OUT/v3-details.txt 2>&1
  ncu -i $OUT/v3.ncu-rep --page source --print-source sass --csv > $OUT/v3-source.csv 2>&1
  echo "source view: $(wc -l < $OUT/v3-source.csv) lines"
  grep -iE "stall|Warp Cycles" $OUT/v3-details.txt | head -30
fi
settings=()
for s in ${SETTINGS:-}; do [[ $s == - ]] && settings+=("") || settings+=("$s"); done
[[ ${#settings[@]} -gt 0 ]] && DEPTHS=${DEPTHS:-32768,131072} bench_pairs "${settings[@]}"
echo "total: $(( $(date +%s) - t0 )) s"
