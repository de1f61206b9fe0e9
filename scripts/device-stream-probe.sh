#!/usr/bin/env bash
# Milestone-45 device run (issue 4: can a persistent kernel whose weight
# stream never waits for the chain bring the step's GEMVs near their bytes?
# run tool, kind nvidia-h200; carry [".devdeps"] only with ENGINE=1):
#  1. builds bench/cuda_stream_probe.cu with nvcc alone and prints its check
#     and table ($OUT/stream-probe.md; ARGS: its arguments);
#  2. with ENGINE=1, the engine's weights part W on the same card: the
#     llama3-8b Q4_0 decode bench at depth 0 with the defaults and with the
#     attention launches left out (`sfx=2`), PAIRS interleaved rounds
#     (scripts/device-cuda-m16.sh's bench_pairs);
#  3. NCU="iters form mode stages lpl bv;...": one stream_kernel launch of
#     each row under ncu (the first timed one: after the check's two and the
#     row's two untimed ones; for the wavefront, form 2, NCU_K=wave_kernel
#     NCU_SKIP=35: the check's 33 launches), its speed of light, warp states, scheduler,
#     instruction and memory sections and its stall reasons (cycles a warp
#     waits per issued instruction, by reason).
cd "$(dirname "$0")/.."
source scripts/device-probe-run.sh
probe_run stream || exit 1
if [[ ${ENGINE:-0} == 1 ]]; then
  SETTINGS="- sfx=2" MODES=${MODES:-k2v2} DEPTHS=${DEPTHS:-0} PAIRS=${PAIRS:-2} bash scripts/device-cuda-m16.sh
fi
S="--section SpeedOfLight --section WarpStateStats --section SchedulerStats --section InstructionStats"
S="$S --section MemoryWorkloadAnalysis --section SourceCounters"
S="$S --metrics regex:smsp__average_warps_issue_stalled_.*_per_issue_active.ratio"
IFS=';' read -ra ncu_rows <<< "${NCU:-}"
for r in "${ncu_rows[@]}"; do
  f="$OUT/ncu-stream-${r// /_}.txt"
  # shellcheck disable=SC2086  # word lists
  timeout 200 ncu --clock-control none $S -k "regex:${NCU_K:-stream_kernel}" --launch-skip "${NCU_SKIP:-4}" \
    --launch-count 1 /tmp/stream_probe $r > "$f" 2>&1
  echo "== ncu $r (rc $?, $(( $(date +%s) - t0 )) s)"
  grep -E "Duration|Executed Instructions |No Eligible|Active Warps Per|Eligible Warps|Warp Cycles Per Issued" "$f"
  grep -E "issue_stalled" "$f" | sed 's/smsp__average_warps_issue_stalled_//; s/_per_issue_active.ratio//' |
    sort -k3 -rn | head -10
done
echo "total: $(( $(date +%s) - t0 )) s"
