#!/usr/bin/env python3
# Per-token comparison of two KV modes against f16 from `longkv perplexity
# --save-nll FILE` (the run must include f16 and both modes):
#   scripts/nll-compare.py FILE MODE_A MODE_B   (modes as the table prints them)
# Prints, for A and B, the mean change of each scored token's NLL against f16
# (its exp is the perplexity ratio), its spread and quantiles, how much of B's
# excess over A the worst tokens carry, and the mean change per bucket: f16's
# probability of the target, position in the window, offset in a 512-token
# chunk, and whether the target already occurred earlier in its window (a
# token the model could copy).
import csv, math, sys
rows = list(csv.reader(open(sys.argv[1])))
hdr, rows = rows[0], rows[1:]
ix = {h: i for i, h in enumerate(hdr)}
a, b = sys.argv[2], sys.argv[3]
f16 = [float(r[ix['nll:f16']]) for r in rows]
A = [float(r[ix['nll:' + a]]) for r in rows]
B = [float(r[ix['nll:' + b]]) for r in rows]
KA = [float(r[ix['kl:' + a]]) for r in rows]
KB = [float(r[ix['kl:' + b]]) for r in rows]
pos = [int(r[1]) for r in rows]
n = len(rows)
dA = [x - y for x, y in zip(A, f16)]
dB = [x - y for x, y in zip(B, f16)]
def q(v, p): s = sorted(v); return s[min(len(s) - 1, int(p * len(s)))]
print(f"tokens {n}")
for name, d, k in (("A", dA, KA), ("B", dB, KB)):
    print(f"{name}: mean dNLL {sum(d)/n:+.5f} (ppl x{math.exp(sum(d)/n):.4f}), mean |dNLL| {sum(map(abs,d))/n:.5f}, "
          f"mean KL {sum(k)/n:.5f}, share of tokens with dNLL>0 {sum(x>0 for x in d)/n:.3f}")
    print(f"   quantiles of dNLL: 1% {q(d,.01):+.3f} 10% {q(d,.1):+.3f} 50% {q(d,.5):+.4f} 90% {q(d,.9):+.3f} 99% {q(d,.99):+.3f} 99.9% {q(d,.999):+.3f}")
diff = [y - x for x, y in zip(dA, dB)]  # B's NLL minus A's
tot = sum(diff)
srt = sorted(diff, reverse=True)
print(f"B - A: mean {tot/n:+.5f}; B worse on {sum(x>0 for x in diff)/n:.3f} of tokens")
for frac in (0.001, 0.01, 0.05, 0.1):
    k = int(frac * n)
    print(f"   the {frac*100:g}% of tokens where B is worst: sum {sum(srt[:k]):+.1f} of the total {tot:+.1f}; "
          f"where B is best: {sum(srt[-k:]):+.1f}")
# by f16's probability of the target
print("by f16's p(target):")
buckets = [(0, 0.01), (0.01, 0.1), (0.1, 0.5), (0.5, 1.01)]
for lo, hi in buckets:
    sel = [i for i in range(n) if lo <= math.exp(-f16[i]) < hi]
    if not sel: continue
    m = len(sel)
    print(f"   p in [{lo},{hi}): {m:5d} tokens, mean dNLL A {sum(dA[i] for i in sel)/m:+.4f} B {sum(dB[i] for i in sel)/m:+.4f}, "
          f"mean KL A {sum(KA[i] for i in sel)/m:.4f} B {sum(KB[i] for i in sel)/m:.4f}, "
          f"share of B-A total {sum(diff[i] for i in sel)/tot:+.2f}")
print("by position in the window:")
for lo, hi in ((1, 512), (512, 1024), (1024, 2048), (2048, 4096)):
    sel = [i for i in range(n) if lo <= pos[i] < hi]
    m = len(sel)
    print(f"   pos [{lo},{hi}): {m:5d} tokens, mean dNLL A {sum(dA[i] for i in sel)/m:+.4f} B {sum(dB[i] for i in sel)/m:+.4f}, "
          f"mean KL A {sum(KA[i] for i in sel)/m:.4f} B {sum(KB[i] for i in sel)/m:.4f}")
print("by position within a 512-token chunk:")
for lo, hi in ((0, 128), (128, 256), (256, 384), (384, 512)):
    sel = [i for i in range(n) if lo <= pos[i] % 512 < hi and pos[i] >= 512]
    m = len(sel)
    print(f"   offset [{lo},{hi}) (after the first chunk): {m:5d} tokens, mean dNLL A {sum(dA[i] for i in sel)/m:+.4f} B {sum(dB[i] for i in sel)/m:+.4f}, "
          f"mean KL A {sum(KA[i] for i in sel)/m:.4f} B {sum(KB[i] for i in sel)/m:.4f}")
# Targets that occurred earlier in the window (a copy is possible) against first occurrences.
seen = {}
rep = []
for r in rows:
    w, t = int(r[0]), int(r[2])
    s = seen.setdefault(w, set())
    rep.append(t in s)
    s.add(t)
print("by whether the target occurred earlier in the window:")
for flag in (True, False):
    sel = [i for i in range(n) if rep[i] == flag and pos[i] >= 512]
    m = len(sel)
    print(f"   {'repeat' if flag else 'first '} (pos >= 512): {m:5d} tokens, mean dNLL A {sum(dA[i] for i in sel)/m:+.4f} B {sum(dB[i] for i in sel)/m:+.4f}, "
          f"mean KL A {sum(KA[i] for i in sel)/m:.4f} B {sum(KB[i] for i in sel)/m:.4f}, share of B-A total {sum(diff[i] for i in sel)/tot:+.2f}")
