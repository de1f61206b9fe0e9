# Sourced by the scripts/device-cuda-m*.sh runs (after device-setup.sh: OUT,
# t0): bench_pairs SETTING... runs the llama3-8b Q4_0 decode bench once per
# LONGKV_CUDA_TUNING setting, all settings in turn, PAIRS rounds (default 2),
# depths DEPTHS (0,131072), modes MODES (f16,k2v2), NTOK steps (32), into
# $OUT/bench.md, then prints the tables and the kernels / bandwidth lines.
# Needs B (the longkv binary).
bench_pairs() {
  local bench="bench --device cuda --synthetic llama3-8b --wtype q4_0 -n ${NTOK:-32} -p 0 -d ${DEPTHS:-0,131072} --kv ${MODES:-f16,k2v2}"
  local i tn
  : > $OUT/bench.md
  for ((i = 0; i < ${PAIRS:-2}; ++i)); do
    for tn in "$@"; do
      echo "=== LONGKV_CUDA_TUNING=$tn (pair $i)" >> $OUT/bench.md
      LONGKV_CUDA_TUNING=$tn timeout 120 $B $bench >> $OUT/bench.md 2>&1
      echo "bench '$tn' rc $? at $(( $(date +%s) - t0 )) s"
    done
  done
  grep -E "^===|^\|" $OUT/bench.md | grep -vE "^\|[- |]*\|$" | head -60
  grep -E "kernels|membw|bandwidth" $OUT/bench.md | sort -u | head -6
}
