# Sourced by the scripts/device-*.sh runs (run tool, carry [".devdeps"]):
# records the machine, lays out the eval model where the tests look for it
# (LONGKV_SHARED=/tmp/shared), builds longkv with CUDA from the carried .debs
# (scripts/device-build.sh) and sets LD_LIBRARY_PATH. Sets OUT, t0 and the
# binaries the scripts run: B (longkv) and T (longkv_tests); defines run_checks.
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; date -u; nvcc --version | tail -1; } 2>&1 | tee "$OUT/env.txt"
mkdir -p /tmp/shared/models/evalmodel /tmp/shared/data/wikitext-2-raw
ln -sf "$PWD/.devdeps/evalmodel-llama37m-q8_0.gguf" /tmp/shared/models/evalmodel/
ln -sf "$PWD/.devdeps/reference.json" /tmp/shared/models/evalmodel/
[[ -f .devdeps/data/wiki.test.raw ]] && ln -sf "$PWD/.devdeps/data/wiki.test.raw" /tmp/shared/data/wikitext-2-raw/
export LONGKV_SHARED=/tmp/shared
t0=$(date +%s)
scripts/device-build.sh .devdeps build-device ${TARGETS:-longkv-cli longkv_tests} > "$OUT/build.log" 2>&1 ||
  { grep -E "error" "$OUT/build.log" | head; tail -15 "$OUT/build.log"; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
source build-device/env.sh
B=./build-device/longkv
T=./build-device/tests/longkv_tests

# The CUDA checks (CHECK_FILTER, default every Cuda*, CudaQuant*, CudaFlash*
# test but the speed reports) into $OUT/checks.log, and their summary.
run_checks() {
  timeout 240 stdbuf -oL $T --gtest_filter="${CHECK_FILTER:-Cuda*:CudaQuant*:CudaFlash*:-*SpeedReport*}" > $OUT/checks.log 2>&1
  echo "checks rc $? at $(( $(date +%s) - t0 )) s"
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[==========\]|Failure|Expected|Which is" $OUT/checks.log | head -30
}

# The batched bench (milestone 50) with each setting in SETTINGS
# (LONGKV_CUDA_TUNING, - = the defaults) into $OUT/batch-SETTING.md, and its
# rows: synthetic llama3-8b Q4_0 at DEPTHS (131072) for MODES (f16,k2v2), B in
# BATCH (1,4,max; max sized for a card of GPU_MEM MiB, 81559: an 80 GB one).
batch_bench() {
  for st in ${SETTINGS:--}; do
    local f=$OUT/batch-${st//[^a-z0-9]/_}.md
    LONGKV_CUDA_TUNING=$([[ $st == - ]] || echo $st) timeout ${BENCH_S:-200} $B bench --device cuda --synthetic \
      llama3-8b --wtype q4_0 -d ${DEPTHS:-131072} --kv ${MODES:-f16,k2v2} -n ${NGEN:-8} -p 0 --batch ${BATCH:-1,4,max} \
      --gpu-mem ${GPU_MEM:-81559} > $f 2>&1
    echo "=== batch bench, setting $st: rc $? at $(( $(date +%s) - t0 )) s"
    grep -E "^\||error|warn" $f | grep -vE "^\|-" | head -30
  done
}
