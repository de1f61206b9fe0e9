#!/usr/bin/env bash
# Runs the KV-mode quality evaluation (docs/quality.md) on the device
# machine's CPU cores (16 there vs 2 on the dev machine): perplexity of the
# evaluation model on WikiText-2 at ctx 4096 for every mode side by side, and
# pass-key retrieval at 4K. Needs in .devdeps/: the .debs of
# scripts/device-build.sh, evalmodel-llama37m-q8_0.gguf, data/wiki.test.raw,
# data/pg-essays/. Optional first argument: a `git archive` tarball of the
# tree to evaluate (so a half-edited work tree never matters).
# Results land in $OUT (ppl.md, ppl.json, needle.md, needle.html).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
if [[ -n "${1:-}" ]]; then
  mkdir -p /tmp/eval-src && tar -xf "$1" -C /tmp/eval-src
  cp -r .devdeps /tmp/eval-src/ && cd /tmp/eval-src
fi
shared=/tmp/shared
mkdir -p $shared/models/evalmodel $shared/data/wikitext-2-raw
ln -sf "$root/.devdeps/evalmodel-llama37m-q8_0.gguf" $shared/models/evalmodel/
ln -sf "$root/.devdeps/data/wiki.test.raw" $shared/data/wikitext-2-raw/wiki.test.raw
ln -sfn "$root/.devdeps/data/pg-essays" $shared/data/pg-essays
LONGKV_CUDA=OFF LONGKV_SHARED=$shared scripts/device-build.sh .devdeps build-eval longkv-cli
source build-eval/env.sh
out=${OUT:-/tmp/out}
mkdir -p "$out"
lk=build-eval/longkv
model=$shared/models/evalmodel/evalmodel-llama37m-q8_0.gguf
windows=${WINDOWS:-8}
modes=${MODES:-f16,k8v8,k4v4,k2v2,k2v2:r0,k2v4,k4v2,k2v2:rope=pre,k4v4:rot,k2v2:rot,k2v4:rot}
echo "== perplexity, ctx 4096, $windows windows: $modes"
$lk perplexity -m $model -f $shared/data/wikitext-2-raw/wiki.test.raw --ctx 4096 --chunks "$windows" \
  --kv "$modes" --json "$out/ppl.json" > "$out/ppl.md" 2> "$out/ppl.err"
cat "$out/ppl.md"
echo "== pass-key at 4K"
$lk needle -m $model --task passkey --lengths 4096 --depths 0,0.25,0.5,0.75,1 --trials ${TRIALS:-4} \
  --kv ${NEEDLE_MODES:-f16,k4v4,k2v2,k2v2:rot} --haystack $shared/data/pg-essays --html "$out/needle.html" \
  --json "$out/needle.json" > "$out/needle.md" 2> "$out/needle.err"
cat "$out/needle.md"
