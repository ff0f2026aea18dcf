#!/usr/bin/env python3
"""gen_gguf_fixtures.py — writes tests/data/gguf_alltypes.gguf with gguf-py (llama.cpp's own Python writer).

The file is an independent check of models/gguf.c: it holds one key of every metadata value type (with boundary
values), an array of every element type, arrays of arrays, general.alignment = 64, and small tensors of the
types the kernels compute with (F32, F16, BF16, Q8_0, Q4_0, Q4_1), quantized by gguf-py's reference
quantizers. tests/models/test_gguf_roundtrip.c reads it and knows every value below; keep the two in step.

Tensor values follow value(i) = sin(0.37 * i + 0.5 * t) * (1 + 0.25 * t), i the flat element index and t the
tensor's position in TENSORS, so the C test recomputes them.

Run: /work/main/.venv/bin/python tests/gen_gguf_fixtures.py   (writes tests/data/gguf_alltypes.gguf)
"""
import os

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as T
from gguf import GGUFWriter
from gguf.quants import quantize

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "gguf_alltypes.gguf")

# (name, numpy shape as (ne[n-1], ..., ne[0]), type)
TENSORS = [
    ("t.f32", (64,), Q.F32),
    ("t.f16", (3, 32), Q.F16),
    ("t.bf16", (2, 32), Q.BF16),
    ("t.q8_0", (2, 64), Q.Q8_0),
    ("t.q4_0", (2, 2, 32), Q.Q4_0),
    ("t.q4_1", (4, 32), Q.Q4_1),
]


def values(t, shape):
    i = np.arange(int(np.prod(shape)), dtype=np.float64)
    return (np.sin(0.37 * i + 0.5 * t) * (1 + 0.25 * t)).astype(np.float32).reshape(shape)


def main():
    w = GGUFWriter(OUT, arch="testarch")  # writes general.architecture = "testarch"
    w.add_custom_alignment(64)  # general.alignment (u32), and the writer pads to it
    w.add_key_value("v.u8", 255, T.UINT8)
    w.add_key_value("v.i8", -128, T.INT8)
    w.add_key_value("v.u16", 65535, T.UINT16)
    w.add_key_value("v.i16", -32768, T.INT16)
    w.add_key_value("v.u32", 4294967295, T.UINT32)
    w.add_key_value("v.i32", -2147483648, T.INT32)
    w.add_key_value("v.f32", 3.5, T.FLOAT32)
    w.add_key_value("v.bool_t", True, T.BOOL)
    w.add_key_value("v.bool_f", False, T.BOOL)
    w.add_key_value("v.str", 'h\u00e9llo "world"\n', T.STRING)
    w.add_key_value("v.str_empty", "", T.STRING)
    w.add_key_value("v.u64", 18446744073709551615, T.UINT64)
    w.add_key_value("v.i64", -9223372036854775808, T.INT64)
    w.add_key_value("v.f64", 0.125, T.FLOAT64)
    w.add_key_value("v.u32_small", 7, T.UINT32)
    w.add_key_value("v.i64_small", -3, T.INT64)
    w.add_key_value("a.u8", [1, 2, 255], T.ARRAY, T.UINT8)
    w.add_key_value("a.i8", [-1, 0, 127], T.ARRAY, T.INT8)
    w.add_key_value("a.u16", [65535, 1], T.ARRAY, T.UINT16)
    w.add_key_value("a.i16", [-300, 300], T.ARRAY, T.INT16)
    w.add_key_value("a.u32", [1, 2147483648], T.ARRAY, T.UINT32)
    w.add_key_value("a.i32", [-5, 6, 7], T.ARRAY, T.INT32)
    w.add_key_value("a.f32", [0.5, -1.25, 1e30], T.ARRAY, T.FLOAT32)
    w.add_key_value("a.bool", [True, False, True], T.ARRAY, T.BOOL)
    w.add_key_value("a.str", ["alpha", "", "g\u00e4mma"], T.ARRAY, T.STRING)
    w.add_key_value("a.u64", [18446744073709551615], T.ARRAY, T.UINT64)
    w.add_key_value("a.i64", [-9223372036854775808, 9], T.ARRAY, T.INT64)
    w.add_key_value("a.f64", [1.5, -2.5], T.ARRAY, T.FLOAT64)
    w.add_key_value("a.nested_i32", [[1, 2], [3]], T.ARRAY, T.ARRAY)
    w.add_key_value("a.nested_str", [["x"], ["y", "zz"]], T.ARRAY, T.ARRAY)
    w.add_key_value("v.after_nested", 42, T.UINT32)  # parsing must resume correctly after the nested arrays
    for t, (name, shape, qtype) in enumerate(TENSORS):
        x = values(t, shape)
        if qtype == Q.F32:
            w.add_tensor(name, x)
        elif qtype == Q.F16:
            w.add_tensor(name, x.astype(np.float16))
        else:
            w.add_tensor(name, quantize(x, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
