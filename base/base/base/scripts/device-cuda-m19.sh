#!/usr/bin/env bash
# Milestone-19 device run (issue 4: ":rot" inside the decode kernels; run
# tool, carry [".devdeps"], kind nvidia-h200, one call of <= 560 s): build
# longkv-cli (and longkv_tests with CHECKS=1), then
#  1. with CHECKS=1 the CUDA checks (CHECK_FILTER, default every Cuda*,
#     CudaQuant*, CudaFlash* test but the speed reports);
#  2. LIST="mode[/setting] ...": LIST_N (16) consecutive launches of a
#     decode step's kernels (GEMVs, attention, rotation), each with its ncu
#     duration, LIST_SKIP (1600) of them skipped, in a 16-step run at each
#     depth of LIST_DEPTHS (0,131072), graphs off, e.g. "k4v4:rot/rotk=0":
#     mode k4v4:rot with LONGKV_CUDA_TUNING=rotk=0. (At depth 0 the first
#     four steps fill the sinks and are not fused: ~300 launches each.)
#  3. the llama3-8b Q4_0 decode bench once per setting in SETTINGS,
#     interleaved PAIRS times (scripts/device-bench-pairs.sh; MODES, DEPTHS).
# Small files under $OUT; a summary last.
set -o pipefail
cd "$(dirname "$0")/.."
source scripts/device-setup-checks.sh || exit 1
source scripts/device-bench-pairs.sh
K='gemv_slab|decode_block|quant_decode_v3|hadamard|rope_kernel|append_kernel|decode_split|merge_splits'
LIST_DEPTHS=${LIST_DEPTHS:-0,131072}
for d in ${LIST_DEPTHS//,/ }; do
  for ms in ${LIST:-}; do
    m=${ms%%/*}; s=""; [[ $ms == */* ]] && s=${ms#*/}
    f="$OUT/list-$d-${ms//[:\/=]/_}.txt"
    LONGKV_CUDA_TUNING=$s LONGKV_CUDA_GRAPHS=0 timeout 120 ncu --clock-control none --metrics gpu__time_duration.sum \
      -k "regex:$K" --launch-skip ${LIST_SKIP:-1600} --launch-count ${LIST_N:-16} $B bench --device cuda --synthetic llama3-8b --wtype q4_0 -n 16 \
      -p 0 -d $d --kv $m > "$f" 2>&1
    echo "list $ms depth $d rc $?: $(awk '/^  [a-zA-Z_].*\(/ {n=$0; sub(/^ +(void )?/, "", n); sub(/[<(].*/, "", n);
      sub(/.*::/, "", n)} /gpu__time_duration.sum/ {printf "%s %s; ", n, $NF}' "$f")"
  done
done
settings=()
for s in ${SETTINGS:-}; do [[ $s == - ]] && settings+=("") || settings+=("$s"); done
[[ ${#settings[@]} -gt 0 ]] && DEPTHS=${DEPTHS:-0,131072} bench_pairs "${settings[@]}"
echo "total: $(( $(date +%s) - t0 )) s"
