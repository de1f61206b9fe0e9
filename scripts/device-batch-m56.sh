#!/usr/bin/env bash
# Milestone 56's batched-step run (run tool, carry [".devdeps"], kind
# nvidia-h200, one call of <= 600 s): builds longkv, its tests and
# step_timeline; runs CHECK_FILTER's checks (default: RMSNorm, the batch and
# tuning tests); one batched step of TL_SEQS sequences (24) at 131072 tokens
# on the timeline with TL_SETTING (b1l,bvb=12); then batch_bench
# (scripts/device-setup.sh) for k2v2 at SETTINGS, DEPTHS and BATCH, and f16
# at 4 sequences, 131072 tokens. Prints the tables' rows and the checks last.
cd "$(dirname "$0")/.."
export OUT=${OUT:-/tmp/out}
source scripts/device-setup.sh > $OUT/setup.log 2>&1 || { tail -20 $OUT/setup.log; exit 1; }
CHECK_FILTER=${CHECK_FILTER:-'Cuda.Rmsnorm*:CudaBatch*:Cuda.Tuning*'} run_checks > $OUT/chk.log 2>&1
cmake --build build-device --target step_timeline > $OUT/tlb.log 2>&1
LONGKV_CUDA_TUNING=${TL_SETTING-b1l,bvb=12} timeout 150 ./build-device/step_timeline --kv k2v2 -d 131072 -n 6 \
  --batch ${TL_SEQS:-24} > $OUT/tl.md 2>&1
SETTINGS=${SETTINGS:-"- b1l,bvb=12"} MODES=k2v2 DEPTHS=${DEPTHS:-32768,131072} BATCH=${BATCH:-4,8,16,max} \
  BENCH_S=200 batch_bench > $OUT/bb.log 2>&1
[[ ${F16:-1} == 1 ]] && SETTINGS="-" MODES=f16 DEPTHS=131072 BATCH=4 batch_bench > $OUT/bbf.log 2>&1
echo "done at $(( $(date +%s) - t0 )) s"
grep -hE "^=== batch|^\| (k2v2|f16)" $OUT/bb.log $OUT/bbf.log 2>/dev/null | sed 's/k2v2:g32:r128:s4:rope=post/k2v2/' |
  cut -c1-80
grep -E "^\|" $OUT/tl.md | grep -vE "^\|-" | cut -d'|' -f2-6; grep -E "^layer|error" $OUT/tl.md
cat $OUT/chk.log
