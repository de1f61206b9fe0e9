#!/usr/bin/env bash
# Milestone-11 device run (issue 4: the fixed cost of a decode step; run tool,
# carry [".devdeps"], kind nvidia-h200, one call of <= 560 s): build
# longkv-cli and longkv_tests, then
#  1. the checks, before anything is timed: the one-kernel decode step
#     against the CPU reference and the old four-kernel path, dense decode
#     attention, the quantized decode vs the CPU cache, the evaluation model
#     (logits, 40-step GPU-vs-CPU decode) and graph replay vs direct decode;
#     the model-level ones again with the old paths (ablk=0,apdl=0);
#  2. the GEMV report (Q4_0, per llama3-8b shape) on this card;
#  3. the llama3-8b Q4_0 decode bench, old paths (ablk=0,apdl=0) and NEW
#     (default ablk=1,apdl=0, the shipped defaults; milestone 11's table ran
#     NEW=ablk=1,apdl=1; NEW=ablk=1,qblk=1 tries the quantized short-context
#     path) interleaved PAIRS times (default 2), depths DEPTHS (0,131072),
#     modes MODES (f16,k2v2);
#  4. ncu: every kernel of depth-0 decode steps timed alone (old and NEW).
# CHECKS=0 skips 1, GEMV=0 skips 2, NCU=0 skips 4. Small files under $OUT; a
# summary last.
set -o pipefail
cd "$(dirname "$0")/.."
TARGETS="${TARGETS:-longkv-cli longkv_tests}" source scripts/device-setup.sh || exit 1
source scripts/device-bench-pairs.sh
OLD="ablk=0,apdl=0"
MODEL='Cuda.EvalModelMatchesReferenceLogits:Cuda.EvalModelDecodeMatchesCpuEngine:Cuda.GraphReplayMatchesDirectDecode'
if [[ "${CHECKS:-1}" != 0 ]]; then
  timeout 150 stdbuf -oL $T --gtest_filter="Cuda.DecodeBlock*:Cuda.AttentionMatchesReference:CudaQuant.DecodeFromCodesMatchesCpuCache:$MODEL" \
    > $OUT/checks.log 2>&1
  echo "checks (defaults) rc $? at $(( $(date +%s) - t0 )) s"
  grep -E "^decode block|graph replay|^\[  (PASSED|FAILED) |^\[==========\]|Failure|Expected|Which is|rror" $OUT/checks.log | head -40
  echo "=== LONGKV_CUDA_TUNING=$OLD" >> $OUT/checks.log
  LONGKV_CUDA_TUNING=$OLD timeout 60 stdbuf -oL $T --gtest_filter="Cuda.EvalModelDecodeMatchesCpuEngine:Cuda.GraphReplayMatchesDirectDecode" \
    >> $OUT/checks.log 2>&1
  echo "model checks ($OLD) rc $? at $(( $(date +%s) - t0 )) s"
  sed -n "/^=== LONGKV_CUDA_TUNING=$OLD/,\$p" $OUT/checks.log | grep -E "graph replay|FAILED|PASSED|Failure" | head
fi
if [[ "${GEMV:-1}" != 0 ]]; then
  timeout 40 stdbuf -oL $T --gtest_filter='Cuda.GemvPipelineSpeedReport' > $OUT/gemv.log 2>&1
  echo "gemv report rc $? at $(( $(date +%s) - t0 )) s"
  grep -E "^gemv|us|GB/s" $OUT/gemv.log | head -12
fi
bench_pairs "$OLD" "${NEW:-ablk=1,apdl=0}"
# 4. NCU=1: each kernel of depth-0 f16 decode steps timed alone by ncu
#    (launched one by one, LONGKV_CUDA_GRAPHS=0; no overlap, so this is each
#    kernel's own duration, ramp and drain included), old paths and new.
if [[ "${NCU:-1}" != 0 ]] && command -v ncu > /dev/null; then
  for tn in "$OLD" "${NEW:-ablk=1,apdl=0}"; do
    f=$OUT/ncu-${tn//[=,]/_}.csv
    LONGKV_CUDA_GRAPHS=0 LONGKV_CUDA_TUNING=$tn timeout 75 ncu --clock-control none --metrics gpu__time_duration.sum \
      --launch-skip 700 --launch-count 500 --csv $B bench --device cuda --synthetic llama3-8b --wtype q4_0 -n 8 -p 0 \
      -d 0 --kv ${NCU_MODE:-f16} > $f 2> $OUT/ncu.err
    echo "ncu '$tn' rc $? at $(( $(date +%s) - t0 )) s"
    python3 - $f <<'PY' 2>&1 | head -14
# Per kernel name (template arguments cut): launches per step, mean and total us;
# steps = launches of the embedding lookup (get_rows_kernel), one per step.
import csv
import re
import sys
from collections import defaultdict


def short(name):
    name = name.replace("(anonymous namespace)::", "").replace("<unnamed>::", "")
    name = re.sub(r"<.*>", "", name)    # template arguments
    name = re.sub(r"\(.*$", "", name)  # parameter list
    return name.split("::")[-1].split(" ")[-1]


def main(path):
    rows = []
    with open(path, newline="") as f:
        lines = [l for l in f if l.startswith('"')]
    for r in csv.DictReader(lines):
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        v = float(r["Metric Value"].replace(",", ""))
        unit = r.get("Metric Unit", "ns")
        us = v / 1e3 if unit in ("nsecond", "ns") else v if unit in ("usecond", "us") else v * 1e3
        rows.append((short(r["Kernel Name"]), us))
    if not rows:
        print("no kernels in", path)
        return
    agg = defaultdict(lambda: [0, 0.0])
    for n, us in rows:
        agg[n][0] += 1
        agg[n][1] += us
    steps = max(1, agg.get("get_rows_kernel", [0])[0])
    total = sum(t for _, t in agg.values())
    print(f"{path}: {len(rows)} kernels, {steps} steps, {total / steps:.1f} us of kernels per step")
    for n, (c, t) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
        print(f"  {n:40s} {c / steps:6.1f}/step  mean {t / c:7.2f} us  per step {t / steps:8.1f} us")


if __name__ == "__main__":
    main(sys.argv[1])
PY
  done
fi
echo "total: $(( $(date +%s) - t0 )) s"
