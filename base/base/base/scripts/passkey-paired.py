#!/usr/bin/env python3
"""Paired per-prompt comparison of `longkv needle --json` runs.

Usage: scripts/passkey-paired.py BASE_MODE RUN.json [RUN.json ...]

Prompts are matched by (seed, task, length, depth, trial), so a mode run
later with the same seed and grid pairs with an earlier run of BASE_MODE. For each other mode prints a Markdown row:
correct / prompts for the base and the mode, the discordant pairs (base right
and mode wrong; mode right and base wrong) and the two-sided exact sign-test
(McNemar) p-value of the discordant counts: how often a symmetric scatter
would split them at least this unevenly.
"""
import json
import sys
from math import comb


def sign_test_p(b, c):
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    p = sum(comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * p)


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    base, files = argv[1], argv[2:]
    cells = {}  # (file, task, length, depth, trial) -> {mode: correct}
    modes = []
    for f in files:
        with open(f) as fh:
            run = json.load(fh)
        for m in run["settings"]["kv_modes"]:
            if m not in modes:
                modes.append(m)
        seed = run["settings"]["seed"]
        for t in run["trials"]:
            key = (seed, t["task"], t["length"], t["depth"], t["trial"])
            cells.setdefault(key, {})[t["mode"]] = bool(t["correct"])
    base_full = next((m for m in modes if m == base or m.startswith(base + ":")), None)
    if base_full is None:
        sys.exit(f"base mode {base} not in the runs ({', '.join(modes)})")
    print(f"{len(files)} run(s), {len(cells)} prompts; base {base_full}\n")
    print("| mode | base correct | mode correct | base only | mode only | sign-test p |")
    print("|---|---:|---:|---:|---:|---:|")
    for m in modes:
        if m == base_full:
            continue
        pairs = [(c[base_full], c[m]) for c in cells.values() if base_full in c and m in c]
        b = sum(1 for x, y in pairs if x and not y)
        c = sum(1 for x, y in pairs if y and not x)
        nb = sum(1 for x, _ in pairs if x)
        nm = sum(1 for _, y in pairs if y)
        print(f"| {m} | {nb}/{len(pairs)} | {nm}/{len(pairs)} | {b} | {c} | {sign_test_p(b, c):.3f} |")


if __name__ == "__main__":
    main(sys.argv)
