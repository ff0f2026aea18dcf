#!/usr/bin/env python3
"""Writes tests/data/kquant_*: the types added with the K-quants, as the `gguf` package (llama.cpp's reference
code in numpy) quantizes and dequantizes them, for tests/kernels/test_kernel_kquants_fixtures.c.

    .venv/bin/python tests/gen_kquant_fixtures.py        (run from the repository root; output is committed)

Files (little-endian, no headers):
  kquant_<type>.bin        N_BLOCKS random blocks of the type (random bytes, with finite fp16 scales)
  kquant_<type>.deq.f32    gguf.quants.dequantize of those bytes, float32
      for q2_K q3_K q4_K q5_K q6_K iq4_nl (gguf dequantizes these but cannot quantize them), q5_0 q5_1
  kquant_<type>.q.bin      gguf.quants.quantize of tests/data/quant_input.f32 (4 rows x 256, the inputs of
  kquant_<type>.q.deq.f32  gen_quant_fixtures.py: rounding ties, zero and constant blocks, fp16 corners), and
                           its dequantization; for q5_0 q5_1, which gguf quantizes

Random bytes reach every level, every packed scale and min and every high bit; the fp16 scales are drawn
finite (|d| in 2^-14 .. 2^4, both signs, and some zeros) so that no NaN payload question arises.
"""
import os
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

N_BLOCKS = 32

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "data")

# type -> (block bytes, byte offsets of the fp16 scales in a block)
LAYOUTS = {
    "q2_K": (T.Q2_K, 84, (80, 82)),
    "q3_K": (T.Q3_K, 110, (108,)),
    "q4_K": (T.Q4_K, 144, (0, 2)),
    "q5_K": (T.Q5_K, 176, (0, 2)),
    "q6_K": (T.Q6_K, 210, (208,)),
    "iq4_nl": (T.IQ4_NL, 18, (0,)),
    "q5_0": (T.Q5_0, 22, (0,)),
    "q5_1": (T.Q5_1, 24, (0, 2)),
}


def random_fp16(rng: np.random.Generator, n: int) -> np.ndarray:
    mant = rng.uniform(1.0, 2.0, n)
    exp = rng.integers(-14, 5, n)
    sign = rng.choice([-1.0, 1.0], n)
    v = (sign * mant * np.exp2(exp)).astype(np.float16)
    v[rng.random(n) < 0.05] = 0.0  # d = 0 or dmin = 0 blocks
    return v


def main() -> int:
    rng = np.random.default_rng(20251125)
    for name, (qt, bb, d_offs) in LAYOUTS.items():
        blocks = rng.integers(0, 256, (N_BLOCKS, bb), dtype=np.uint8)
        for off in d_offs:
            blocks[:, off:off + 2] = random_fp16(rng, N_BLOCKS).view(np.uint8).reshape(N_BLOCKS, 2)
        deq = quants.dequantize(blocks.reshape(1, -1), qt)
        blocks.tofile(os.path.join(OUT, f"kquant_{name}.bin"))
        np.ascontiguousarray(deq, dtype=np.float32).tofile(os.path.join(OUT, f"kquant_{name}.deq.f32"))

    rows = np.fromfile(os.path.join(OUT, "quant_input.f32"), dtype=np.float32).reshape(4, 256)
    with np.errstate(over="ignore", invalid="ignore"):  # the fp16 overflow corners of the inputs, on purpose
        for name, qt in (("q5_0", T.Q5_0), ("q5_1", T.Q5_1)):
            q = np.ascontiguousarray(quants.quantize(rows, qt))
            q.tofile(os.path.join(OUT, f"kquant_{name}.q.bin"))
            deq = quants.dequantize(q.view(np.uint8).reshape(4, -1), qt)
            np.ascontiguousarray(deq, dtype=np.float32).tofile(os.path.join(OUT, f"kquant_{name}.q.deq.f32"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
