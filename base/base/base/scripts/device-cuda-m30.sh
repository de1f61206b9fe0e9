#!/usr/bin/env bash
# Milestone-30 device run (issue 4: what limits v3 and the GEMVs in the step;
# run tool, carry [".devdeps"], kind nvidia-h200, one call of <= 560 s):
# build longkv-cli (and longkv_tests with CHECKS=1), then
#  1. with CHECKS=1 the CUDA checks (CHECK_FILTER) before anything is timed;
#  2. FULL=1: ncu's full section set for one v3 launch and for one layer's
#     four slab GEMV launches at depth NCU_DEPTH (131072), KV mode k2v2,
#     graphs off, every detail printed ($OUT/full-v3.txt, full-gemv.txt) and
#     the lines that name the limiting unit echoed;
#  3. TIMELINE=1: if nsys is installed, a trace of NTL (8) pipelined steps
#     with graphs on (--cuda-graph-trace=node), as a CSV of kernel start/end
#     ($OUT/trace.csv), and per kernel name its mean duration and the mean
#     gap from the end of the kernel before it;
#  4. SETTINGS: the llama3-8b Q4_0 decode bench per setting, interleaved
#     PAIRS times (scripts/device-bench-pairs.sh).
set -o pipefail
cd "$(dirname "$0")/.."
source scripts/device-setup-checks.sh || exit 1
source scripts/device-bench-pairs.sh
D=${NCU_DEPTH:-131072}
if [[ ${FULL:-0} == 1 ]]; then
  LONGKV_CUDA_GRAPHS=0 timeout 200 ncu --clock-control none --set full --import-source no -k regex:quant_decode_v3 \
    --launch-skip 64 --launch-count 1 -o $OUT/full-v3 -f $B bench --device cuda --synthetic llama3-8b --wtype q4_0 \
    -n 4 -p 0 -d $D --kv k2v2 > $OUT/full-v3.log 2>&1
  echo "ncu full v3 rc $? at $(( $(date +%s) - t0 )) s"
  ncu -i $OUT/full-v3.ncu-rep --page details --print-details all > $OUT/full-v3.txt 2>&1
  LONGKV_CUDA_GRAPHS=0 timeout 200 ncu --clock-control none --set full --import-source no -k regex:gemv_slab \
    --launch-skip 256 --launch-count 4 -o $OUT/full-gemv -f $B bench --device cuda --synthetic llama3-8b --wtype q4_0 \
    -n 4 -p 0 -d $D --kv k2v2 > $OUT/full-gemv.log 2>&1
  echo "ncu full gemv rc $? at $(( $(date +%s) - t0 )) s"
  ncu -i $OUT/full-gemv.ncu-rep --page details --print-details all > $OUT/full-gemv.txt 2>&1
  rm -f $OUT/*.ncu-rep
  grep -E "^  [a-z_]+.*\(|Duration|DRAM Throughput|L1/TEX Cache Throughput|Compute \(SM\) Throughput|Issue Slots Busy|Registers Per|Achieved Occupancy|Eligible Warps|No Eligible|Stall [A-Z]|Shared.*Wavefronts|Bank Conflicts" \
    $OUT/full-v3.txt $OUT/full-gemv.txt | cut -c1-160 | head -80
fi
if [[ ${TIMELINE:-0} == 1 ]]; then
  NSYS=$(command -v nsys || ls /usr/local/cuda*/bin/nsys /opt/nvidia/nsight-systems*/bin/nsys 2>/dev/null | head -1)
  if [[ -z $NSYS ]]; then
    echo "no nsys on this machine"
  else
    timeout 200 $NSYS profile --trace cuda --cuda-graph-trace node -o $OUT/step -f true $B bench --device cuda \
      --synthetic llama3-8b --wtype q4_0 -n ${NTL:-8} -p 0 -d $D --kv k2v2 > $OUT/nsys.log 2>&1
    echo "nsys rc $? at $(( $(date +%s) - t0 )) s"
    $NSYS stats --report cuda_gpu_trace --format csv --output $OUT/trace $OUT/step.nsys-rep > /dev/null 2>&1
    rm -f $OUT/step.nsys-rep $OUT/step.sqlite
    ls -la $OUT/trace* 2>/dev/null; gzip -f $OUT/trace*.csv
  fi
fi
settings=()
for s in ${SETTINGS:-}; do [[ $s == - ]] && settings+=("") || settings+=("$s"); done
[[ ${#settings[@]} -gt 0 ]] && DEPTHS=${DEPTHS:-32768,131072} bench_pairs "${settings[@]}"
echo "total: $(( $(date +%s) - t0 )) s"
