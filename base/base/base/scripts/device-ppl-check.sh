#!/usr/bin/env bash
# Issue-4 check on the device machine: WikiText-2 perplexity of the evaluation
# model per KV mode on the GPU (--device cuda, f32 prefill GEMM) next to the
# same run on the CPU engine (CPU=0: GPU only). Needs .devdeps as
# scripts/device-eval-cpu.sh. Results: $OUT/ppl-gpu.md, $OUT/ppl-cpu.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/device-setup.sh
shared=/tmp/shared
args=(-m $shared/models/evalmodel/evalmodel-llama37m-q8_0.gguf -f $shared/data/wikitext-2-raw/wiki.test.raw
      --ctx 4096 --chunks "${WINDOWS:-1}" --kv "${MODES:-f16,k8v8,k4v4,k2v2}")
build-device/longkv perplexity "${args[@]}" --device cuda > "$OUT/ppl-gpu.md" 2> "$OUT/ppl-gpu.err" || tail -3 "$OUT/ppl-gpu.err"
cat "$OUT/ppl-gpu.md"
[[ "${CPU:-1}" == 0 ]] && exit 0
build-device/longkv perplexity "${args[@]}" --device cpu > "$OUT/ppl-cpu.md" 2> "$OUT/ppl-cpu.err" || tail -3 "$OUT/ppl-cpu.err"
cat "$OUT/ppl-cpu.md"
