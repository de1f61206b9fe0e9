#!/usr/bin/env bash
# Milestone-4 device run (run tool, carry [".devdeps"], timeout <= 420 s):
# build, every CUDA check (tensor-core quantized decode and both f16 split
# depths against the CPU, graph replay vs direct decode), decode attention
# per layer (new and previous kernels), and the llama3-8b Q4_0 bench at
# depth 0 and 131072 for f16 and k2v2, with CUDA graphs on and off.
# Logs under $OUT; each step has its own time limit; a summary last.
set -o pipefail
cd "$(dirname "$0")/.."
source scripts/device-setup.sh
timeout 150 $T --gtest_filter='Cuda*:CudaQuant*:-Cuda.GemvSpeedReport:CudaQuant.DecodeAttentionSpeedReport' > $OUT/tests.log 2>&1
echo "tests rc $? at $(( $(date +%s) - t0 )) s"
grep -E "^quant |attention h|worst|graph replay|FAILED|PASSED|Failure|Expected|Which is|error|differing record" $OUT/tests.log | head -70
timeout 100 $T --gtest_filter='CudaQuant.DecodeAttentionSpeedReport' > $OUT/attn_speed.log 2>&1
echo "attn speed rc $? at $(( $(date +%s) - t0 )) s"
grep -E "decode attention|FAILED|error" $OUT/attn_speed.log
BENCH="bench --device cuda --synthetic llama3-8b --wtype q4_0 -d 0,131072 --kv f16,k2v2 -n 16 -p 0"
LONGKV_CUDA_GRAPHS=1 timeout 90 $B $BENCH > $OUT/bench_graphs.md 2>&1
echo "bench (graphs) rc $? at $(( $(date +%s) - t0 )) s"
LONGKV_CUDA_GRAPHS=0 timeout 80 $B $BENCH > $OUT/bench_nographs.md 2>&1
echo "bench (no graphs) rc $? at $(( $(date +%s) - t0 )) s"
for f in bench_graphs bench_nographs; do echo "== $f"; grep -E "^\||decode steps|bandwidth" $OUT/$f.md; done
grep -iE "error|fail" $OUT/bench_graphs.md $OUT/bench_nographs.md | head
echo "total: $(( $(date +%s) - t0 )) s"
