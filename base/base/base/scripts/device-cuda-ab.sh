#!/usr/bin/env bash
# A/B device run (issue 4): the working tree against an earlier commit on the
# same machine, in one call (run tool, carry [".devdeps"], kind nvidia-h200).
# Machines differ by several percent in k2v2 decode, so before/after figures
# come from one call. The device gets no .git: export the earlier tree as an
# untracked folder first and remove it afterwards:
#   rm -rf base && mkdir base && git archive REV | tar -x -C base
#   BASE=base bash scripts/device-cuda-ab.sh     (through the run tool)
# Builds longkv-cli in both (the working tree's with device-setup.sh, then
# the earlier one); with CHECKS=1 also the working tree's tests, and runs its
# CUDA checks (CHECK_FILTER, default every Cuda* test but the speed reports)
# before anything is timed; then the llama3-8b Q4_0 decode bench alternating the two
# binaries PAIRS times (default 3) at depths DEPTHS (32768,131072), modes
# MODES (f16,k2v2) -- the working tree's once per LONGKV_CUDA_TUNING setting
# in NEW_SETTINGS (space-separated, "-" = its defaults; default "-"); with NCU_KV set, ncu's duration of NCU_COUNT launches of
# the kernels matching NCU_K (quant_decode_v3) at depth NCU_DEPTH (131072)
# for both. Small files under $OUT; tables last.
set -o pipefail
cd "$(dirname "$0")/.."
BASE=${BASE:-base}
[[ -d $BASE/src ]] || { echo "no earlier tree in $BASE/ (see the header)"; exit 1; }
source scripts/device-setup-checks.sh || exit 1
(cd "$BASE" && scripts/device-build.sh ../.devdeps build-base longkv-cli) > "$OUT/base-build.log" 2>&1 ||
  { grep -E "error" "$OUT/base-build.log" | head; exit 1; }
echo "base build: $(( $(date +%s) - t0 )) s"
A=$BASE/build-base/longkv
bench="bench --device cuda --synthetic llama3-8b --wtype q4_0 -n ${NTOK:-32} -p 0 -d ${DEPTHS:-32768,131072} --kv ${MODES:-f16,k2v2}"
: > $OUT/ab.md
for ((i = 0; i < ${PAIRS:-3}; ++i)); do
  for which in base ${NEW_SETTINGS:--}; do
    bin=$B tn=$which; [[ $which == base ]] && bin=$A tn=""; [[ $which == - ]] && tn=""
    echo "=== $which (pair $i)" >> $OUT/ab.md
    LONGKV_CUDA_TUNING=$tn timeout 120 $bin $bench >> $OUT/ab.md 2>&1
    echo "bench $which rc $? at $(( $(date +%s) - t0 )) s"
  done
done
if [[ -n ${NCU_KV:-} ]]; then
  for which in base new; do
    bin=$B; [[ $which == base ]] && bin=$A
    LONGKV_CUDA_GRAPHS=0 timeout 150 ncu --clock-control none --metrics gpu__time_duration.sum -k "regex:${NCU_K:-quant_decode_v3}" \
      --launch-skip 64 --launch-count ${NCU_COUNT:-4} $bin bench --device cuda --synthetic llama3-8b --wtype q4_0 -n 4 -p 0 \
      -d ${NCU_DEPTH:-131072} --kv $NCU_KV > $OUT/ncu-$which.txt 2>&1
    echo "ncu $which rc $? at $(( $(date +%s) - t0 )) s"
    grep -E "gpu__time_duration.sum" $OUT/ncu-$which.txt | awk -v w=$which '{print w, $(NF-1), $NF}'
  done
fi
grep -E "^===|^\|" $OUT/ab.md | grep -vE "^\|[- |]*\|$" | grep -vE "^\| device" | head -60
grep -E "bandwidth" $OUT/ab.md | sort -u | head -3
echo "total: $(( $(date +%s) - t0 )) s"
