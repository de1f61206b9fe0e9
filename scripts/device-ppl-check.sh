#!/usr/bin/env bash
# Issue-4 check on the device machine: WikiText-2 perplexity of the evaluation
# model per KV mode on the GPU (--device cuda, f32 prefill GEMM) next to the
# same run on the CPU engine. Needs .devdeps as scripts/device-eval-cpu.sh.
# Results: $OUT/ppl-gpu.md, $OUT/ppl-cpu.md.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=/tmp/shared
mkdir -p $shared/models/evalmodel $shared/data/wikitext-2-raw
ln -sf "$PWD/.devdeps/evalmodel-llama37m-q8_0.gguf" $shared/models/evalmodel/
ln -sf "$PWD/.devdeps/data/wiki.test.raw" $shared/data/wikitext-2-raw/wiki.test.raw
LONGKV_SHARED=$shared scripts/device-build.sh .devdeps build-device longkv-cli >/dev/null
source build-device/env.sh
out=${OUT:-/tmp/out}
mkdir -p "$out"
args=(-m $shared/models/evalmodel/evalmodel-llama37m-q8_0.gguf -f $shared/data/wikitext-2-raw/wiki.test.raw
      --ctx 4096 --chunks "${WINDOWS:-1}" --kv "${MODES:-f16,k8v8,k4v4,k2v2}")
nvidia-smi --query-gpu=name --format=csv,noheader || true
build-device/longkv perplexity "${args[@]}" --device cuda > "$out/ppl-gpu.md" 2> "$out/ppl-gpu.err" || tail -3 "$out/ppl-gpu.err"
cat "$out/ppl-gpu.md"
build-device/longkv perplexity "${args[@]}" --device cpu > "$out/ppl-cpu.md" 2> "$out/ppl-cpu.err" || tail -3 "$out/ppl-cpu.err"
cat "$out/ppl-cpu.md"
