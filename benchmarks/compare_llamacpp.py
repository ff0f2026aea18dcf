#!/usr/bin/env python3
"""compare_llamacpp.py — Sluice against llama.cpp, single stream, same model file, same threads, same run.

Run by hand (never by CI): llama.cpp comes from PyPI's llama-cpp-python, which compiles llama.cpp for
minutes, so it lives in its own virtual environment:

    python3 -m venv /tmp/llvenv && /tmp/llvenv/bin/pip install llama-cpp-python
    /tmp/llvenv/bin/python benchmarks/compare_llamacpp.py --sluice-bench build/benchmarks/sluice-bench-decode

For each thread count it alternates the two engines (Sluice, llama.cpp, Sluice, llama.cpp, ...) so machine
noise hits both alike, and reports medians:
  prefill tok/s: a prompt of exactly --prompt-tokens tokens evaluated in one batch;
  decode tok/s:  --gen-tokens single-token steps after it.
llama.cpp is measured through its Python binding's eval() (one llama_decode per call); Python's overhead per
call is a few microseconds against milliseconds of compute. Sluice is measured by sluice-bench-decode (the
public engine API, including sampling and detokenization), one run per alternation.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import time

TEXT = ("The history of the river begins in the mountains, where snow melts each spring and feeds a thousand "
        "small streams. They join in the valleys, turn mills and water fields, and carry boats of grain and "
        "timber down to the sea. Towns grew on its banks; bridges and locks were built, and engineers learned to "
        "measure its flow, to hold it back with sluices and to release it when the fields were dry. ")


def llamacpp_once(llm, prompt, gen):
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(prompt)
    t1 = time.perf_counter()
    tok = prompt[-1]
    for _ in range(gen - 1):
        llm.eval([tok])
    t2 = time.perf_counter()
    return len(prompt) / (t1 - t0), (gen - 1) / (t2 - t1)


def sluice_once(bench, model, threads, n_prompt, gen, precision):
    out = subprocess.run([bench, "-m", model, "--threads", str(threads), "--runs", "1", "--prompt-tokens",
                          str(n_prompt), "--gen-tokens", str(gen), "--precision", precision],
                         check=True, capture_output=True, text=True).stdout
    row = [l for l in out.splitlines() if re.match(r"\|\s+\d+\s+\|", l)][-1]
    cells = [c.strip() for c in row.strip("|").split("|")]
    return float(cells[1]), float(cells[2])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.expanduser("~/.cache/sluice/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--sluice-bench", default="build/benchmarks/sluice-bench-decode")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--precision", default="fast")
    a = ap.parse_args()
    from llama_cpp import Llama  # imported late: --help works without it

    print(f"model {a.model}\nprompt {a.prompt_tokens} tokens, decode {a.gen_tokens} tokens, "
          f"median of {a.runs} alternating runs\n")
    print("| threads | engine | prefill tok/s | decode tok/s |")
    print("|--------:|--------|--------------:|-------------:|")
    ratios = []
    for t in [int(x) for x in a.threads.split(",")]:
        llm = Llama(model_path=a.model, n_ctx=a.prompt_tokens + a.gen_tokens + 16, n_batch=a.prompt_tokens,
                    n_ubatch=a.prompt_tokens, n_threads=t, n_threads_batch=t, verbose=False)
        ids = llm.tokenize(TEXT.encode(), add_bos=False)
        prompt = [ids[i % len(ids)] for i in range(a.prompt_tokens)]
        llamacpp_once(llm, prompt[:64], 8)  # warm-up
        sl, lc = [], []
        for _ in range(a.runs):
            sl.append(sluice_once(a.sluice_bench, a.model, t, a.prompt_tokens, a.gen_tokens, a.precision))
            lc.append(llamacpp_once(llm, prompt, a.gen_tokens))
        del llm
        s_pf, s_dc = statistics.median(x[0] for x in sl), statistics.median(x[1] for x in sl)
        l_pf, l_dc = statistics.median(x[0] for x in lc), statistics.median(x[1] for x in lc)
        print(f"| {t} | sluice | {s_pf:.1f} | {s_dc:.1f} |")
        print(f"| {t} | llama.cpp | {l_pf:.1f} | {l_dc:.1f} |")
        ratios.append((t, s_pf / l_pf, s_dc / l_dc))
        sys.stdout.flush()
    print("\n| threads | prefill ratio (sluice / llama.cpp) | decode ratio |")
    print("|--------:|-----------------------------------:|-------------:|")
    for t, p, d in ratios:
        print(f"| {t} | {p:.2f} | {d:.2f} |")


if __name__ == "__main__":
    main()
