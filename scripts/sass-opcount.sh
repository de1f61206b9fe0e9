#!/usr/bin/env bash
# Counts the SASS instructions of the kernels in an object file whose
# mangled names match a regex, by opcode (the device machine has cuobjdump;
# this one does not). Used to compare a kernel's instruction mix before and
# after a change, e.g. two builds of gemv.cu:
#   scripts/sass-opcount.sh build-device/CMakeFiles/longkv.dir/src/backend/cuda/gemv.cu.o \
#     'gemv_slab_kernelILNS_10WeightTypeE20ELb1ELb0ELb1ELi16'
# prints, per matching kernel, its total and the ten most frequent opcodes.
# The whole kernel is counted (prologue and tails too), not one loop.
set -euo pipefail
obj=$1 re=$2
cuobjdump -sass "$obj" | awk -v re="$re" '
  /Function : / { name = $3; on = name ~ re; next }
  on && /^ +\/\*[0-9a-f]+\*\/ / {
    line = $0
    sub(/^ +\/\*[0-9a-f]+\*\/ +/, "", line)
    sub(/^@!?U?P[0-9T] +/, "", line)
    split(line, f, /[ ;]/)
    op = f[1]; sub(/\..*/, "", op)
    n[name]++; c[name, op]++
  }
  END {
    for (k in n) {
      printf "%s total %d:", k, n[k]
      m = 0
      for (key in c) { split(key, p, SUBSEP); if (p[1] == k) { ops[++m] = p[2]; cnt[m] = c[key] } }
      for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (cnt[j] > cnt[i]) { t = cnt[i]; cnt[i] = cnt[j]; cnt[j] = t; t = ops[i]; ops[i] = ops[j]; ops[j] = t }
      for (i = 1; i <= m && i <= 10; i++) printf " %s %d", ops[i], cnt[i]
      printf "\n"
      delete ops; delete cnt
    }
  }'
