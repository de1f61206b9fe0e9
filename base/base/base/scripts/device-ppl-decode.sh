#!/usr/bin/env bash
# Milestone-26 device run (issue 4: does a v3 operand form change quality?):
# WikiText-2 perplexity of the evaluation model streamed one token per
# forward call (--batch 1), so every position after the first window's
# sinks and window attends through the decode step -- the one-launch step's
# v3 kernel, whose comparison forms (LONGKV_CUDA_TUNING vsub=0, khl)
# the evaluation model's shape (k2v2, head_dim 64, 4 query heads a KV head)
# instantiates. One GPU run per setting in PPL_SETTINGS ("-" = defaults), then
# the same on the CPU engine (CPU=0: GPU only). Needs .devdeps as
# scripts/device-ppl-check.sh. Results: $OUT/ppl-decode-N.md (N = setting
# index; the CPU's is ppl-decode-cpu.md), a summary line each.
set -uo pipefail
cd "$(dirname "$0")/.."
TARGETS=longkv-cli source scripts/device-setup.sh || exit 1
shared=/tmp/shared
args=(-m $shared/models/evalmodel/evalmodel-llama37m-q8_0.gguf -f $shared/data/wikitext-2-raw/wiki.test.raw
      --ctx "${CTX:-4096}" --chunks "${WINDOWS:-1}" --batch 1 --kv "${MODES:-f16,k2v2}")
i=0
for s in ${PPL_SETTINGS:--}; do
  [[ $s == - ]] && s=""
  LONGKV_CUDA_TUNING=$s timeout 200 $B perplexity "${args[@]}" --device cuda > "$OUT/ppl-decode-$i.md" \
    2> "$OUT/ppl-decode-$i.err" || tail -3 "$OUT/ppl-decode-$i.err"
  echo "gpu '$s' at $(( $(date +%s) - t0 )) s:"
  grep -E "^\|" "$OUT/ppl-decode-$i.md"
  grep -iE "kernels" "$OUT/ppl-decode-$i.err" "$OUT/ppl-decode-$i.md" | head -2
  i=$((i + 1))
done
[[ "${CPU:-1}" == 0 ]] && exit 0
timeout 300 $B perplexity "${args[@]}" --device cpu > "$OUT/ppl-decode-cpu.md" 2> "$OUT/ppl-decode-cpu.err" ||
  tail -3 "$OUT/ppl-decode-cpu.err"
echo "cpu at $(( $(date +%s) - t0 )) s:"
grep -E "^\|" "$OUT/ppl-decode-cpu.md"
