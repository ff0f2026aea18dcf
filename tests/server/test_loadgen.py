"""test_loadgen.py — the load generator `sluice-bench` against a real `sluice serve` (the tiny stories260K model).

What a benchmark user relies on: every request it claims to have measured really completed with the output
length asked for, its statistics are internally consistent (percentiles ordered, throughput positive), the
JSON and the table agree in shape, and a dead server is a clean, quick error, not a hang. Timing never
decides a test: only counts and orderings are asserted.
"""
import json
import os
import socket
import subprocess

import pytest

from sluice_server import Server

BENCH = os.path.join(os.environ.get("SLUICE_BUILD_DIR", ""), "benchmarks", "sluice-bench")


def run_bench(*args, timeout=60):
    return subprocess.run([BENCH, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.stop()


def check_ordered(stat):
    assert stat is not None
    assert stat["p50"] <= stat["p90"] <= stat["p99"] <= stat["max"]
    assert stat["p50"] >= 0


def test_self_test_statistics_and_sse():
    """Percentiles, goodput, TPOT from usage and SSE events split across reads, on known inputs (no server)."""
    r = run_bench("--self-test", timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "self-test: ok" in r.stdout


def test_closed_loop_counts_and_stats(server, tmp_path):
    out = tmp_path / "out.json"
    csv = tmp_path / "out.csv"
    r = run_bench("--url", server.base, "-c", "4", "-n", "16", "--max-tokens", "8", "--prompt-tokens", "4:12",
                  "--vocab-range", "3:500", "--slo-ttft-ms", "60000", "--json", str(out), "--csv", str(csv))
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads(out.read_text())
    assert data["model"] == "stories260K"  # learned from GET /v1/models
    (lv,) = data["levels"]
    assert lv["concurrency"] == 4
    assert lv["completed"] == 16 and lv["failed"] == 0 and lv["errors"] == {}
    assert lv["total_completion_tokens"] == 16 * 8
    # token-id prompts have exact lengths: the server's usage must report lengths inside the asked range
    assert 4 <= lv["prompt_tokens_min"] <= lv["prompt_tokens_max"] <= 12
    for key in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
        check_ordered(lv[key])
    assert lv["ttft_ms"]["n"] == 16 and lv["tpot_ms"]["n"] == 16
    assert lv["ttft_ms"]["max"] <= lv["e2e_ms"]["max"]
    assert lv["request_throughput"] > 0 and lv["output_token_throughput"] > 0
    assert lv["goodput_fraction"] == 1.0  # a one-minute TTFT objective is met by every request
    assert "c=4" in r.stdout and "TTFT" in r.stdout
    rows = csv.read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith(f"{server.base},4,0,16,0,")


def test_sweep_rate_and_warmup(server, tmp_path):
    out = tmp_path / "sweep.json"
    r = run_bench("--url", server.base + "/v1", "--sweep-concurrency", "1,3", "--per-stream", "2", "--warmup", "2",
                  "--max-tokens", "5", "--prompt-tokens", "6", "--vocab-range", "3:500", "--json", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    levels = json.loads(out.read_text())["levels"]
    assert [lv["concurrency"] for lv in levels] == [1, 3]
    # warm-up requests are not counted: per-stream 2 means 2 and 6 measured requests
    assert [lv["completed"] for lv in levels] == [2, 6]
    assert [lv["total_completion_tokens"] for lv in levels] == [10, 30]
    assert all(lv["prompt_tokens_min"] == lv["prompt_tokens_max"] == 6 for lv in levels)

    r = run_bench("--url", server.base, "--rate", "50", "-n", "6", "--max-tokens", "4", "--prompt-tokens", "3",
                  "--vocab-range", "3:500", "--chat", "--json", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    (lv,) = json.loads(out.read_text())["levels"]
    assert lv["rate"] == 50 and lv["completed"] == 6 and lv["total_completion_tokens"] == 24


def test_compare_mode_alternates_and_gives_ratios(server, tmp_path):
    out = tmp_path / "cmp.json"
    # the same server under two spellings of its URL: both sides must get every request, and ratios exist
    r = run_bench("--url", server.base, "--compare", server.base + "/v1/", "--rounds", "2", "-c", "2", "-n", "4",
                  "--max-tokens", "6", "--prompt-tokens", "5", "--vocab-range", "3:500", "--json", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    d = json.loads(out.read_text())
    (a,) = d["levels"]
    (b,) = d["compare"]["levels"]
    assert a["completed"] == b["completed"] == 8  # 2 rounds of 4
    assert a["total_completion_tokens"] == b["total_completion_tokens"] == 48
    (q,) = d["ratios"]
    assert q["output_token_throughput"] > 0 and q["ttft_p50"] > 0 and q["tpot_p50"] > 0
    assert "ratios" in r.stdout


def test_http_errors_are_counted_by_status(server, tmp_path):
    out = tmp_path / "err.json"
    # a model the server does not serve: every request gets OpenAI's 404, counted and reported, exit status 3
    r = run_bench("--url", server.base, "--model", "no-such-model", "-c", "2", "-n", "4", "--max-tokens", "2",
                  "--json", str(out))
    assert r.returncode == 3, r.stdout + r.stderr
    (lv,) = json.loads(out.read_text())["levels"]
    assert lv["completed"] == 0 and lv["failed"] == 4
    assert lv["errors"]["404"]["count"] == 4
    assert "no-such-model" in lv["errors"]["404"]["message"]
    assert "HTTP 404" in r.stdout


def test_nothing_listening_is_a_clean_error():
    with socket.socket() as s:  # a port that was free a moment ago and has no listener
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = run_bench("--url", f"http://127.0.0.1:{port}", "-c", "2", "-n", "4", timeout=20)
    assert r.returncode == 1
    assert "cannot reach" in r.stderr and str(port) in r.stderr


def test_bad_flags_are_refused():
    r = run_bench("-c", "0")
    assert r.returncode == 1 and "-c" in r.stderr
    r = run_bench("-c", "2", "--rate", "3")
    assert r.returncode == 1 and "one load shape" in r.stderr
    r = run_bench("--url", "https://example.com")
    assert r.returncode == 1 and "http://" in r.stderr


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_prompts_file_completions_and_chat(server, tmp_path):
    """JSONL prompts: requests cycle through the lines, each line's max_tokens is honoured, and a line with
    "messages" goes to chat/completions (a line's kind picks the endpoint, in one run)."""
    prompts = write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "Once upon a time", "max_tokens": 3},
        {"prompt": [1, 300, 301, 302, 303], "max_tokens": 5},  # token ids: usage must count exactly 5
        "",  # a blank line is not a prompt
        {"messages": [{"role": "user", "content": "Tell me a story"}], "max_tokens": 4},
    ])
    out = tmp_path / "f.json"
    # 6 requests over 3 lines: each line twice, so 2 * (3 + 5 + 4) output tokens
    r = run_bench("--url", server.base, "-c", "2", "-n", "6", "--prompts-file", str(prompts), "--json", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    d = json.loads(out.read_text())
    (lv,) = d["levels"]
    assert lv["completed"] == 6 and lv["failed"] == 0
    assert lv["total_completion_tokens"] == 2 * (3 + 5 + 4)
    assert d["prompts_file"] == str(prompts)
    assert "completions+chat" in r.stdout and "(3)" in r.stdout
    assert lv["prompt_tokens_min"] <= 5 <= lv["prompt_tokens_max"]

    # --chat sends each text "prompt" as one user message; lines without max_tokens get --max-tokens
    chat = write_jsonl(tmp_path / "c.jsonl", [{"prompt": "Hello there"}, {"prompt": "A red bird", "max_tokens": 2}])
    r = run_bench("--url", server.base, "-c", "1", "-n", "4", "--chat", "--max-tokens", "6", "--prompts-file",
                  str(chat), "--json", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    (lv,) = json.loads(out.read_text())["levels"]
    assert lv["completed"] == 4 and lv["total_completion_tokens"] == 2 * (6 + 2)
    assert "sluice-bench: chat" in r.stdout


def test_prompts_file_bad_line_names_its_number(server, tmp_path):
    """A malformed line stops the run before any request, naming the file and the line."""
    cases = [
        ('{"prompt": "fine"}', '{"prompt": "unterminated', "bad JSON"),
        ('{"prompt": "fine"}', '{"text": "no prompt here"}', "exactly one of"),
        ('{"prompt": "fine"}', '{"prompt": "x", "max_tokens": 0}', "max_tokens"),
        ('{"prompt": "fine"}', '{"messages": []}', "messages"),
        ('{"prompt": "fine"}', '{"prompt": 42}', "string or a non-empty array of token ids"),
        ('{"prompt": "fine"}', '["a list, not an object"]', "not a JSON object"),
    ]
    for good, bad, why in cases:
        f = write_jsonl(tmp_path / "bad.jsonl", [good, "", bad])
        r = run_bench("--url", server.base, "-n", "2", "--prompts-file", str(f))
        assert r.returncode == 1, (bad, r.stdout + r.stderr)
        assert f"{f}:3:" in r.stderr and why in r.stderr, (bad, r.stderr)
        assert "measuring" not in r.stderr  # refused during set-up: no phase started
    r = run_bench("--url", server.base, "-n", "2", "--prompts-file", str(tmp_path / "missing.jsonl"))
    assert r.returncode == 1 and "cannot read" in r.stderr
    r = run_bench("--url", server.base, "--prompts-file", str(f), "--prompt-tokens", "4")
    assert r.returncode == 1 and "one prompt source" in r.stderr


def test_prompt_text_tokens_exact_length(server, tmp_path):
    """Text prompts built with /tokenize + /detokenize: the server's usage counts exactly the length asked for
    (the builder re-tokenizes each text and retries windows whose edges merge, so exactness is checked, not
    hoped for)."""
    out = tmp_path / "t.json"
    r = run_bench("--url", server.base, "-c", "3", "-n", "9", "--max-tokens", "3", "--prompt-text-tokens", "12",
                  "--json", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "9 of exact length" in r.stderr
    (lv,) = json.loads(out.read_text())["levels"]
    assert lv["completed"] == 9 and lv["total_completion_tokens"] == 27
    assert lv["prompt_tokens_min"] == lv["prompt_tokens_max"] == 12
    assert lv["total_prompt_tokens"] == 9 * 12
    assert "(text via /tokenize)" in r.stdout

    # a range, with a shared prefix: lengths from usage stay inside it
    r = run_bench("--url", server.base, "-c", "2", "-n", "6", "--max-tokens", "2", "--prompt-text-tokens", "8:40",
                  "--shared-prefix", "4", "--json", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    (lv,) = json.loads(out.read_text())["levels"]
    assert lv["completed"] == 6
    assert 8 <= lv["prompt_tokens_min"] <= lv["prompt_tokens_max"] <= 40
