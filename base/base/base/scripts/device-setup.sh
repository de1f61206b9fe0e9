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
