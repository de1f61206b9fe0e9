#!/usr/bin/env bash
# The CPU speed figures of docs/benchmarks.md: decode and prefill of the
# evaluation model and of random-weight llama3-8b (Q8_0, Q4_0) at 1 and 2
# threads, with GB/s against the measured read bandwidth.
# Usage: bench/cpu_decode.sh [build-dir] [shared-dir]  (prints Markdown)
set -euo pipefail
build=${1:-build}
shared=${2:-../shared}
lk="$build/longkv"
echo "# $(date -u +%Y-%m-%d) on $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
echo
echo '```'
echo "$lk bench -m $shared/models/evalmodel/evalmodel-llama37m-q8_0.gguf -p 512 -n 64 -d 0,4000 --threads-list 1,2 -r 3"
echo '```'
"$lk" bench -m "$shared/models/evalmodel/evalmodel-llama37m-q8_0.gguf" -p 512 -n 64 -d 0,4000 --threads-list 1,2 -r 3 2>/dev/null
for wt in q8_0 q4_0; do
  echo
  echo '```'
  echo "$lk bench --synthetic llama3-8b --wtype $wt -p 64 -n 8 -d 0 --threads-list 1,2"
  echo '```'
  "$lk" bench --synthetic llama3-8b --wtype "$wt" -p 64 -n 8 -d 0 --threads-list 1,2 2>/dev/null
done
