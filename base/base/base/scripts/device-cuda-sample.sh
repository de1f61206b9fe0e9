#!/usr/bin/env bash
# Milestone-30 device run (issue 4: top-k sampling with the candidates
# selected on the GPU; run tool, carry [".devdeps"], kind nvidia-h200): build
# longkv-cli (and longkv_tests with CHECKS=1, then the CUDA checks), then
# `longkv run` on the evaluation model, ROUNDS (3) rounds of: the default
# sampler (top-k 40 on the device), the same with gtop=0 (the whole row to
# the host) and --temp 0 (greedy on the device), for each KV mode in MODES
# (f16,k2v2), N (400) tokens; prints each run's decode line and whether the
# texts of the first two agree. Then the llama3-8b bench those three ways
# (bench --sample).
set -o pipefail
cd "$(dirname "$0")/.."
source scripts/device-setup-checks.sh || exit 1
M=/tmp/shared/models/evalmodel/evalmodel-llama37m-q8_0.gguf
for ((r = 0; r < ${ROUNDS:-3}; ++r)); do
  for kv in $(echo ${MODES:-f16,k2v2} | tr , " "); do
    for v in top host greedy; do
      args="" tn=""
      [[ $v == host ]] && tn=gtop=0
      [[ $v == greedy ]] && args="--temp 0"
      LONGKV_CUDA_TUNING=$tn $B run -m $M -p 'Once upon a time, in a small town' -n ${N:-400} --seed 3 --device cuda \
        --kv $kv --ignore-eos $args > $OUT/run-$kv-$v-$r.txt 2> $OUT/run-$kv-$v-$r.err
      echo "$kv $v round $r: $(grep -o 'decode: .*' $OUT/run-$kv-$v-$r.err)"
    done
    cmp -s $OUT/run-$kv-top-$r.txt $OUT/run-$kv-host-$r.txt && echo "$kv: top-k on the GPU and on the host: same text" ||
      echo "$kv: TEXTS DIFFER"
  done
done
# The llama3-8b Q4_0 decode bench the same three ways (BENCH_DEPTHS, default
# 0,131072), interleaved BENCH_PAIRS (2) times.
for ((r = 0; r < ${BENCH_PAIRS:-2}; ++r)); do
  for v in top host greedy; do
    args="--sample" tn=""
    [[ $v == host ]] && tn=gtop=0
    [[ $v == greedy ]] && args=""
    LONGKV_CUDA_TUNING=$tn timeout 150 $B bench --device cuda --synthetic llama3-8b --wtype q4_0 -n 32 -p 0 \
      -d ${BENCH_DEPTHS:-0,131072} --kv ${MODES:-f16,k2v2} $args > $OUT/bench-$v-$r.md 2>&1
    echo "bench $v round $r rc $?:"; grep -E "^\| cuda" $OUT/bench-$v-$r.md | cut -d'|' -f3,5,6,7
  done
done
grep -E "decode steps" $OUT/bench-*-0.md | cut -c1-250
echo "total: $(( $(date +%s) - t0 )) s"
