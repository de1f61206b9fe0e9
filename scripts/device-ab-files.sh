#!/usr/bin/env bash
# A/B of a change confined to a few files (run tool, carry [".devdeps"], kind
# nvidia-h200): one full build of the working tree, then the same build with
# the earlier version of the changed files put back (an incremental rebuild,
# ~30-60 s instead of a second full build), both binaries timed alternately in
# one call. The device gets no .git: put the earlier files under .devdeps/ab
# first (modified files only; run from the checkout):
#   rm -rf .devdeps/ab && git diff --name-only REV -- src | while read -r f; do
#     mkdir -p ".devdeps/ab/$(dirname "$f")" && git show "REV:$f" > ".devdeps/ab/$f"; done
# Then: the working tree's checks (CHECK_FILTER, default the batch GEMV and
# batched-step checks: `-` skips them) before anything is timed; GEMV=1: the
# batch GEMV speed report of both, alternating, PAIRS times; the decode bench
# of both, alternating PAIRS times (default 2), with BENCH_ARGS (default a
# batched k2v2 run at 32K: the GEMV forms of 4 and 32 tokens). Logs under $OUT.
set -o pipefail
cd "$(dirname "$0")/.."
[[ -d .devdeps/ab/src ]] || { echo "no earlier files in .devdeps/ab/ (see the header)"; exit 1; }
source scripts/device-setup.sh
mkdir -p /tmp/ab/new /tmp/ab/base
cp $B $T /tmp/ab/new/
if [[ ${CHECK_FILTER:-} != - ]]; then
  CHECK_FILTER=${CHECK_FILTER:-'CudaBatch*:Cuda.GemvBatch*:-*SpeedReport*'} run_checks
fi
# The earlier files in, the rebuild, the working tree's files back.
(cd .devdeps/ab && find src -type f) > /tmp/ab/files
while read -r f; do cp "$f" "/tmp/ab/new-src-${f//\//_}" && cp ".devdeps/ab/$f" "$f"; done < /tmp/ab/files
source build-device/env.sh
cmake --build build-device -j"$(nproc)" --target longkv-cli longkv_tests > "$OUT/base-build.log" 2>&1 ||
  { grep -E "error" "$OUT/base-build.log" | head; exit 1; }
cp $B $T /tmp/ab/base/
while read -r f; do cp "/tmp/ab/new-src-${f//\//_}" "$f"; done < /tmp/ab/files
echo "base rebuild ($(wc -l < /tmp/ab/files) files): at $(( $(date +%s) - t0 )) s"
for ((i = 0; i < ${PAIRS:-2}; ++i)); do
  for which in base new; do
    if [[ ${GEMV:-1} != 0 ]]; then
      f=$OUT/gemv-$which-$i.log
      timeout 60 /tmp/ab/$which/longkv_tests --gtest_filter='Cuda.GemvBatchSpeedReport' > $f 2>&1
      echo "=== gemv batch speed, $which (pair $i): rc $? at $(( $(date +%s) - t0 )) s"
      grep -E "^gemv_batch" $f | sed -E 's/gemv_batch q4_0 +//' | paste - - - - - - - | head -5
    fi
  done
done
args=${BENCH_ARGS:-"-d 32768 --kv k2v2 -n 8 -p 0 --batch 4,max --gpu-mem 81559"}
for ((i = 0; i < ${PAIRS:-2}; ++i)); do
  for which in base new; do
    f=$OUT/bench-$which-$i.md
    timeout ${BENCH_S:-150} /tmp/ab/$which/longkv bench --device cuda --synthetic llama3-8b --wtype q4_0 $args > $f 2>&1
    echo "=== bench, $which (pair $i): rc $? at $(( $(date +%s) - t0 )) s"
    grep -E "^\|" $f | grep -vE "^\|[- |]*\|$" | tail -n +2 | head -12
  done
done
echo "total: $(( $(date +%s) - t0 )) s"
(cd $OUT && tar czf logs.tgz --remove-files $(ls | grep -vE '^(logs.tgz|summary.txt)$'))
