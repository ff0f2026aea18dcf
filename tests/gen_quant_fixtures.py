#!/usr/bin/env python3
"""Writes tests/data/quant_*: rows quantized by the `gguf` package (llama.cpp's reference rounding in numpy),
for tests/kernels/test_kernel_quant_fixtures.c, which checks that sl_k_quantize_row writes the same bytes and
sl_k_dequantize_row reads back the same floats.

    .venv/bin/python tests/gen_quant_fixtures.py        (run from the repository root; output is committed)

Files (little-endian, no headers):
  quant_input.f32         N_ROWS x N_COLS float32 inputs
  quant_<type>.bin        the rows quantized (gguf.quants.quantize), row after row
  quant_<type>.deq.f32    gguf.quants.dequantize of those bytes, float32
Types: q4_0 q4_1 q8_0 f16 bf16, and q8_1, which gguf does not implement: it is computed here exactly as
ggml's quantize_row_q8_1_ref (Q8_0's rounding plus s = fp16(d * sum(q))), with no .deq.f32.

The inputs are deterministic and chosen to hit the corners: exact rounding ties (roundf rounds them away from
zero, numpy's round would not), blocks whose largest magnitude is negative (Q4_0 scales by it), constant and
all-zero blocks (d = 0), fp16 subnormals and overflow, and random values of several magnitudes.
"""
import os
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

N_ROWS = 4
N_COLS = 256  # 8 blocks of 32 per row

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "data")


def make_inputs() -> np.ndarray:
    rng = np.random.default_rng(20240601)
    rows = np.zeros((N_ROWS, N_COLS), dtype=np.float32)
    # row 0: random blocks of growing magnitude, one of them shifted positive (Q4_1's m far from 0)
    for b in range(8):
        rows[0, 32 * b:32 * b + 32] = rng.uniform(-1, 1, 32) * (10.0 ** (b - 4))
    rows[0, 224:256] += 5.0
    # row 1: exact ties. Block 0: amax 127 -> Q8 d = 1, halves tie; block 1: min 0, max 15 -> Q4_1 d = 1;
    # block 2: largest magnitude -8 -> Q4_0 d = 1; block 3: all zero; block 4: constant; blocks 5-7 random
    ties = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -126.5], dtype=np.float32)
    rows[1, 0:32] = np.resize(ties, 32)
    rows[1, 31] = 127.0
    rows[1, 32:64] = np.resize(np.array([0.5, 1.5, 2.5, 7.5, 14.5, 3.5], dtype=np.float32), 32)
    rows[1, 32] = 0.0
    rows[1, 33] = 15.0
    rows[1, 64:96] = np.resize(np.array([-8.0, 2.5, -3.5, 6.5, 0.5, -0.5], dtype=np.float32), 32)
    rows[1, 96:128] = 0.0
    rows[1, 128:160] = 0.37
    rows[1, 160:256] = rng.standard_normal(96).astype(np.float32)
    # row 2: fp16 corner values: subnormals, the overflow edge, tiny and huge
    corners = np.array([6e-8, 5.96e-8, 2.98e-8, 1e-7, 6.1e-5, 65504.0, 65519.0, 65520.0, 1e5, -1e-9, 3.0e-38,
                        -2.5e-8, 1.0 / 3.0, -0.0, 1.0009765625, 1.00048828125], dtype=np.float32)
    rows[2, :] = np.resize(corners, N_COLS)
    rows[2, 128:256] = rng.standard_normal(128).astype(np.float32) * 1e-3
    # row 3: plain Gaussian activations
    rows[3, :] = rng.standard_normal(N_COLS).astype(np.float32)
    return rows


def quantize_q8_1(rows: np.ndarray) -> np.ndarray:
    """ggml quantize_row_q8_1_ref: Q8_0's d and rounding, then s = fp16(sum(q) * d)."""
    blocks = rows.reshape(-1, 32).astype(np.float32)
    q8_0 = quants.quantize(blocks, T.Q8_0).reshape(-1, 34)
    d = np.abs(blocks).max(axis=1, keepdims=True) / np.float32(127)  # the float d, before its fp16 rounding
    qs = q8_0[:, 2:].view(np.int8)
    s = (qs.astype(np.int32).sum(axis=1, keepdims=True).astype(np.float32) * d).astype(np.float16)
    return np.concatenate([q8_0[:, 0:2], s.view(np.uint8), q8_0[:, 2:]], axis=1)


def main() -> int:
    rows = make_inputs()
    with np.errstate(over="ignore"):  # f16 of 1e5 is inf, on purpose
        rows.tofile(os.path.join(OUT, "quant_input.f32"))
        for name, qt in (("q4_0", T.Q4_0), ("q4_1", T.Q4_1), ("q8_0", T.Q8_0), ("f16", T.F16), ("bf16", T.BF16)):
            q = quants.quantize(rows, qt)
            np.ascontiguousarray(q).tofile(os.path.join(OUT, f"quant_{name}.bin"))
            deq = quants.dequantize(np.ascontiguousarray(q).view(np.uint8).reshape(N_ROWS, -1), qt)
            np.ascontiguousarray(deq, dtype=np.float32).tofile(os.path.join(OUT, f"quant_{name}.deq.f32"))
        quantize_q8_1(rows).tofile(os.path.join(OUT, "quant_q8_1.bin"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
