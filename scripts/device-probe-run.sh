# Sourced by the device runs of the standalone probes (device-stream-probe.sh,
# device-floor-probe.sh), from the repository root: sets OUT (made) and t0,
# prints the card, and defines probe_run NAME, which builds
# bench/cuda_NAME_probe.cu with nvcc alone into /tmp/NAME_probe, runs it with
# ARGS (a word list) into $OUT/NAME-probe.md and prints that.
set -o pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
t0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
probe_run() {
  local name=$1
  nvcc -O3 -std=c++17 -arch=sm_90 -Isrc -Iinclude -Ibench -o "/tmp/${name}_probe" "bench/cuda_${name}_probe.cu" \
    src/core/error.cpp || return 1
  echo "built at $(( $(date +%s) - t0 )) s"
  # shellcheck disable=SC2086  # ARGS is a word list
  timeout 240 "/tmp/${name}_probe" ${ARGS:-} > "$OUT/${name}-probe.md" 2>&1
  echo "probe rc $? at $(( $(date +%s) - t0 )) s"
  cat "$OUT/${name}-probe.md"
}
