#!/usr/bin/env python3
"""server_event_cost.py — the HTTP front's CPU time per streamed token event.

Starts `sluice serve` on the tiny model (so the engine is cheap and events come fast), drives it with
`sluice-bench` (streamed completions, EOS ignored), and reads the CPU time (user + system) of the server's
event-loop thread — the process's main thread, which parses, frames SSE chunks and writes — from
/proc/PID/task/PID/stat before and after. Dividing by the token events it sent gives the server's cost per
event; the engine thread's time is not in it.

    python3 benchmarks/server_event_cost.py [--build build] [--streams 8] [--tokens 400] [--requests 32]
"""
import argparse
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def thread_cpu_s(pid):
    with open(f"/proc/{pid}/task/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=400)
    ap.add_argument("--requests", type=int, default=32)
    a = ap.parse_args()
    model = os.path.join(ROOT, "tests", "data", "stories260K.gguf")
    srv = subprocess.Popen([os.path.join(a.build, "sluice"), "serve", "-m", model, "--port", "0", "-t", "1",
                            "--max-model-len", "512"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        line = srv.stdout.readline().decode()
        port = int(re.search(r":(\d+)", line).group(1))
        time.sleep(0.5)
        base = [os.path.join(a.build, "benchmarks", "sluice-bench"), "--url", f"http://127.0.0.1:{port}",
                "--prompt-tokens", "8", "--vocab-range", "10:500"]  # the tiny model has 512 tokens
        bench = base + ["-c", str(a.streams), "-n", str(a.requests), "--max-tokens", str(a.tokens)]
        subprocess.run(base + ["-c", "2", "-n", "2", "--max-tokens", "16"], check=True, capture_output=True)
        t0 = thread_cpu_s(srv.pid)
        w0 = time.time()
        subprocess.run(bench, check=True, capture_output=True)
        wall = time.time() - w0
        cpu = thread_cpu_s(srv.pid) - t0
    finally:
        srv.terminate()
        srv.wait(timeout=30)
    events = a.requests * a.tokens
    print(f"{a.requests} streamed requests x {a.tokens} tokens, {a.streams} at a time, {wall:.1f} s")
    print("| events | loop-thread CPU s | µs per token event |\n|---:|---:|---:|")
    print(f"| {events} | {cpu:.2f} | {cpu / events * 1e6:.1f} |")
    sys.exit(0)


if __name__ == "__main__":
    main()
