#!/usr/bin/env bash
# The decode step on a timeline (milestone 37; run tool, carry [".devdeps"],
# kind nvidia-h200, one call of <= 560 s): builds longkv-cli and
# step_timeline (bench/cuda_step_timeline.cpp), then for each RUNS entry
# "MODE:DEPTH:SETTING" (SETTING "-" = the defaults; default RUNS below) the
# per-kernel table of layers 1-30 into $OUT/tl-MODE-DEPTH-SETTING.md, and
# the plain bench's ms/token at the same points (no CUPTI) into
# $OUT/bench.md, so the recorder's own cost is visible. With BASE=DIR (an
# earlier tree exported there, as scripts/device-cuda-ab.sh's header says,
# with this tree's bench/cuda_step_timeline.cpp and CMakeLists.txt copied
# in) a fourth field "base" runs that tree's step_timeline instead. With
# CHECKS=1 the CUDA checks run first (scripts/device-setup-checks.sh); with
# PROBE="ARGS" bench/cuda_barrier_probe.cu is built and run with ARGS
# ($OUT/probe.md) before the timelines.
# With TL_BATCH=N (milestone 56) every run is a batched step of N sequences
# (step_timeline --batch N) and the plain bench is left out (batch_bench of
# scripts/device-setup.sh measures batched steps without CUPTI).
set -o pipefail
cd "$(dirname "$0")/.."
source scripts/device-setup-checks.sh || exit 1
if [[ -n ${PROBE:-} ]]; then
  nvcc -O3 -std=c++17 -arch=sm_90 -Isrc -Iinclude -o build-device/barrier_probe bench/cuda_barrier_probe.cu \
    src/core/error.cpp > $OUT/probe-build.log 2>&1 && timeout 120 build-device/barrier_probe $PROBE > $OUT/probe.md 2>&1
  echo "=== probe '$PROBE': rc $? at $(( $(date +%s) - t0 )) s"; cat $OUT/probe.md $OUT/probe-build.log | head -60
fi
# Its own build step, so that a machine without CUPTI still gives the bench rows.
cmake --build build-device --target step_timeline > $OUT/build-timeline.log 2>&1 ||
  { echo "step_timeline did not build:"; grep -iE "error|cupti" $OUT/build-timeline.log | head -5; }
if [[ -n ${BASE:-} ]]; then
  (cd "$BASE" && scripts/device-build.sh ../.devdeps build-base longkv-cli step_timeline) > "$OUT/base-build.log" 2>&1 ||
    { grep -E "error" "$OUT/base-build.log" | head; exit 1; }
  echo "base build: $(( $(date +%s) - t0 )) s"
fi
RUNS=${RUNS:-"k2v2:131072:- k2v2:0:- f16:131072:- k2v2:131072:pdl=0"}
for r in $RUNS; do
  IFS=: read -r mode depth s tree <<< "$r"
  f="$OUT/tl-$mode-$depth-${s//[=,]/_}${tree:+-$tree}${TL_BATCH:+-b$TL_BATCH}.md"
  [[ $s == - ]] && s=""
  tl=./build-device/step_timeline; [[ $tree == base ]] && tl=$BASE/build-base/step_timeline
  LONGKV_CUDA_TUNING=$s timeout 150 $tl --kv "$mode" -d "$depth" -n ${STEPS:-8} ${TL_BATCH:+--batch $TL_BATCH} \
    > "$f" 2>&1
  echo "=== $r: rc $? at $(( $(date +%s) - t0 )) s"
  cat "$f"
done
if [[ -z ${TL_BATCH:-} ]]; then
  : > $OUT/bench.md
  for r in $RUNS; do
    IFS=: read -r mode depth s tree <<< "$r"
    [[ $s == - ]] && s=""
    b=$B; [[ $tree == base ]] && b=$BASE/build-base/longkv
    LONGKV_CUDA_TUNING=$s timeout 120 $b bench --device cuda --synthetic llama3-8b --wtype q4_0 -n 32 -p 0 \
      -d "$depth" --kv "$mode" >> $OUT/bench.md 2>&1
    echo "bench $r rc $? at $(( $(date +%s) - t0 )) s"
  done
  grep -E "^\| cuda" $OUT/bench.md
fi
