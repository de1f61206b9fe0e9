#!/usr/bin/env python3
"""Static SASS of one kernel's main loop, without a GPU (milestone 29).

    sass-loop.py OBJ NAME_PART [LOOP_OUT]

OBJ is an object or cubin built for sm_90 (e.g. the build's
CMakeFiles/longkv.dir/src/backend/cuda/kv_quant_decode_v3.cu.o), NAME_PART a
piece of the mangled kernel name that picks one function (the first match).
The loop is the smallest backward branch whose span holds every HMMA of the
function. Prints the function's and the loop's instruction counts and the
loop's opcodes by count; LOOP_OUT, if given, gets the loop's instructions.

cuobjdump is not in the CUDA toolkit's Debian install here; the PyPI wheel
nvidia-cuda-cuobjdump carries one (pip download nvidia-cuda-cuobjdump
--no-deps, unzip, bin/cuobjdump). Set CUOBJDUMP to its path.
"""
import collections
import os
import re
import subprocess
import sys


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    obj, part = sys.argv[1], sys.argv[2]
    tool = os.environ.get("CUOBJDUMP", "cuobjdump")
    out = subprocess.run([tool, "-sass", obj], capture_output=True, text=True, check=True).stdout
    funcs = [f for f in re.split(r"\n\s+Function : ", out)[1:] if part in f.split("\n")[0]]
    if not funcs:
        sys.exit(f"no function with '{part}' in {obj}")
    ins = []
    for line in funcs[0].split("\n"):
        m = re.match(r"\s+/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;", line)
        if m:
            ins.append((int(m.group(1), 16), m.group(2)))
    n_mma = sum("HMMA" in t for _, t in ins)
    best = None
    for addr, text in ins:
        t = re.search(r"BRA .*?0x([0-9a-f]+)", text)
        if not t or int(t.group(1), 16) >= addr:
            continue
        lo = int(t.group(1), 16)
        span = [x for a, x in ins if lo <= a <= addr]
        if n_mma and sum("HMMA" in x for x in span) == n_mma and (best is None or addr - lo < best[1] - best[0]):
            best = (lo, addr)
    print(f"function: {len(ins)} instructions, {n_mma} HMMA")
    if best is None:
        sys.exit("no loop holds every HMMA")
    loop = [t for a, t in ins if best[0] <= a <= best[1]]
    ops = collections.Counter((t.split()[1] if t.startswith("@") else t.split()[0]).split(".")[0] for t in loop)
    print(f"loop: {len(loop)} instructions")
    print(" ".join(f"{o} {c}" for o, c in ops.most_common()))
    if len(sys.argv) > 3:
        with open(sys.argv[3], "w") as f:
            f.write("\n".join(loop) + "\n")


if __name__ == "__main__":
    main()
