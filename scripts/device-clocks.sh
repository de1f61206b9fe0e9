#!/usr/bin/env bash
# Milestone-47 device run (issue 4: the decode step at longer contexts, and
# the SM clock and power while it runs; run tool, carry [".devdeps"], kind
# nvidia-h200): builds longkv-cli, then
#  1. the llama3-8b Q4_0 decode bench at DEPTHS (131072,262144,524288) for
#     MODES (f16,k4v4,k2v2), -n 16, as the summary run times it
#     ($OUT/long.md);
#  2. RUNS ("mode:depth:tokens ..."): one bench each with nvidia-smi sampling
#     the SM clock, the power draw and the clock-event reasons every 20 ms
#     ($OUT/clocks-MODE-DEPTH-N.csv), and one table row each: the samples
#     under load (power >= 300 W), their mean and lowest SM clock, their
#     mean power, and how many of them carry the software power cap (0x4).
# The runs leave the card's settings alone; they only read them.
set -o pipefail
cd "$(dirname "$0")/.."
TARGETS=longkv-cli source scripts/device-setup.sh || exit 1
bench=(bench --device cuda --synthetic llama3-8b --wtype q4_0 -p 0)  # (timeout runs no shell function)
timeout 300 $B "${bench[@]}" -d ${DEPTHS:-131072,262144,524288} --kv ${MODES:-f16,k4v4,k2v2} -n 16 > $OUT/long.md 2>&1
echo "long bench rc $? at $(( $(date +%s) - t0 )) s"
grep -E "copy bandwidth|^\| (device|cuda)" $OUT/long.md
nvidia-smi --query-gpu=power.limit,clocks.max.sm --format=csv,noheader
echo "| mode | depth | tokens | ms/tok | samples under load | SM clock mean / min (MHz) | power (W) | power-capped |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for r in ${RUNS:-k2v2:131072:1000 f16:131072:400 k2v2:524288:400 f16:524288:200}; do
  IFS=: read -r mode depth n <<< "$r"
  csv=$OUT/clocks-$mode-$depth-$n.csv
  nvidia-smi --query-gpu=clocks.sm,power.draw,clocks_throttle_reasons.active --format=csv,noheader,nounits \
    -lms 20 > "$csv" 2>&1 &
  smi=$!
  sleep 1
  ms=$(timeout 200 $B "${bench[@]}" -d "$depth" --kv "$mode" -n "$n" 2>&1 | awk -F'|' '/^\| cuda/ {gsub(/ /, "", $7); print $7}')
  sleep 1
  kill $smi; wait $smi 2>/dev/null
  awk -F', ' -v m="$mode" -v d="$depth" -v n="$n" -v ms="$ms" '
    $2 + 0 >= 300 { k++; c += $1; p += $2; if (!lo || $1 < lo) lo = $1; if (substr($3, length($3)) ~ /[4567cdefCDEF]/) cap++ }
    END { printf "| %s | %s | %s | %s | %d | %.0f / %d | %.0f | %d |\n", m, d, n, ms, k, k ? c / k : 0, lo, k ? p / k : 0, cap }
  ' "$csv"
done
echo "total: $(( $(date +%s) - t0 )) s"
