#!/usr/bin/env bash
# Issue-4 summary run with the shipped defaults (run tool, carry [".devdeps"],
# kind nvidia-h100-x1, timeout <= 420 s; TARGETS=longkv-cli builds the CLI only):
# build, then the
# numbers docs/benchmarks.md records — synthetic llama3-8b Q4_0 decode at
# depths 0 / 32K / 131K for f16, k4v4, k2v2 (random KV fill), prefill pp512 at
# 32K with the attention TFLOP/s, and the longest context per mode.
set -o pipefail
cd "$(dirname "$0")/.."
source scripts/device-setup.sh
B=./build-device/longkv
timeout 100 $B bench --device cuda --synthetic llama3-8b --wtype q4_0 -d 0,32768,131072 --kv f16,k4v4,k2v2 -n 16 -p 0 > $OUT/decode.md 2>&1
echo "decode bench rc $? at $(( $(date +%s) - t0 )) s"
timeout 60 $B bench --device cuda --synthetic llama3-8b --wtype q4_0 -d 32768 --kv f16,k2v2 -n 0 -p 512 > $OUT/prefill.md 2>&1
echo "prefill bench rc $? at $(( $(date +%s) - t0 )) s"
timeout 120 $B bench --device cuda --synthetic llama3-8b --wtype q4_0 -d 0 --kv f16,k4v4,k2v2 -n 8 -p 0 --max-ctx > $OUT/maxctx.md 2>&1
echo "max-ctx rc $? at $(( $(date +%s) - t0 )) s"
for f in decode prefill maxctx; do echo "=== $f"; grep -vE "^(bench|membw|load|info)" $OUT/$f.md | head -40; done
echo "total: $(( $(date +%s) - t0 )) s"
