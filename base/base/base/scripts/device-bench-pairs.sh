# Sourced by the scripts/device-cuda-m*.sh runs (after device-setup.sh: OUT,
# t0): bench_pairs SETTING... runs the llama3-8b Q4_0 decode bench once per
# LONGKV_CUDA_TUNING setting, all settings in turn, PAIRS rounds (default 2),
# depths DEPTHS (0,131072), modes MODES (f16,k2v2), NTOK steps (32), into
# $OUT/bench.md, then prints ms/token per setting, mode and depth (one line
# each, every pair's figure) and the kernels / bandwidth lines.
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
  # One line per setting, mode and depth: its ms/token of each pair (the full tables are in bench.md).
  awk '/^===/ {s = $2; sub("LONGKV_CUDA_TUNING=", "", s); if (s == "") s = "-"}
       /^\| cuda/ {split($0, f, "|"); m = f[3]; gsub(/ |:g32:r128:s4:rope=post/, "", m); d = f[5]; gsub(/ /, "", d);
                   v = f[7]; gsub(/ /, "", v); r[s " " m " " d] = r[s " " m " " d] " " v}
       END {for (k in r) print k ":" r[k]}' $OUT/bench.md | sort -k2,2 -k3,3n -k1,1
  grep -E "kernels|membw|bandwidth" $OUT/bench.md | sort -u | head -6
}
