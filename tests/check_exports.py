#!/usr/bin/env python3
"""check_exports.py — libsluice.so exports exactly the SL_API functions of include/sluice/, and the `sluice`
executable needs no GPU driver library (nor cuBLAS) at load time (DESIGN.md §2 and §4).

usage: check_exports.py SOURCE_DIR LIBSLUICE_SO SLUICE_EXE
"""
import pathlib
import re
import subprocess
import sys


def main():
    src, lib, exe = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    declared = set()
    for h in (src / "include" / "sluice").glob("*.h"):
        text = h.read_text()
        for m in re.finditer(r"\bSL_API\b[^;{]*?\b(sl_\w+)\s*\(", text):
            declared.add(m.group(1))
    out = subprocess.run(["nm", "-D", "--defined-only", lib], check=True, capture_output=True, text=True).stdout
    exported = {line.split()[-1] for line in out.splitlines() if line.split() and line.split()[-2] in "TtWiDdBbRr"}
    exported = {s for s in exported if not s.startswith("_")}
    bad = 0
    for s in sorted(exported - declared):
        print(f"exported but not declared SL_API in include/sluice/: {s}")
        bad += 1
    for s in sorted(declared - exported):
        print(f"declared SL_API but not exported by {lib}: {s}")
        bad += 1
    ldd = subprocess.run(["ldd", exe], capture_output=True, text=True).stdout
    # libcublas too: cuBLAS is loaded with dlopen when a CUDA backend is made (runtime/backend_cuda.c)
    for forbidden in ("libcuda.so", "libnvidia-ml", "libcublas"):
        if forbidden in ldd:
            print(f"{exe} needs {forbidden} at load time: it would not start on a machine without a GPU driver")
            bad += 1
    print(f"{len(exported)} exported names checked against {len(declared)} declarations; {bad} problems")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
