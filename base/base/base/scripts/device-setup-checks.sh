# Sourced by the device runs whose CHECKS=1 runs the CUDA checks first
# (device-cuda-m16.sh, -m19.sh, -ab.sh): device-setup.sh building longkv-cli,
# plus longkv_tests with CHECKS=1, and then those checks (run_checks,
# CHECK_FILTER).
targets=longkv-cli
[[ ${CHECKS:-0} == 1 ]] && targets="longkv-cli longkv_tests"
TARGETS=$targets source scripts/device-setup.sh || return 1
if [[ ${CHECKS:-0} == 1 ]]; then run_checks; fi
