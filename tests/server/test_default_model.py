"""Smoke test of `sluice serve` on the default model (SmolLM2-135M-Instruct, its own ChatML template), through
the official OpenAI SDK (max_retries=0). Skipped when the setup step has not fetched the model."""
import os
import re
import select
import signal
import socket
import subprocess
import tempfile
import time

import openai
import pytest

DEFAULT = os.path.join(os.environ.get("SLUICE_CACHE_DIR") or os.path.expanduser("~/.cache/sluice"), "models",
                       "SmolLM2-135M-Instruct.Q4_1.gguf")

pytestmark = pytest.mark.skipif(not os.path.exists(DEFAULT), reason="default model not fetched (run setup.sh)")


def wait_ready(port, proc, timeout=60):
    """Polls /ready: the server listens before its model is loaded and answers 503 until then."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return True
        except OSError:
            pass
        time.sleep(0.02)
    return False


@pytest.fixture(scope="module")
def server():
    log = tempfile.TemporaryFile()
    # no -m: the server must find the default model by itself
    env = dict(os.environ, SLUICE_MODEL=DEFAULT)
    proc = subprocess.Popen([os.environ["SLUICE_BIN"], "serve", "--port", "0", "-t", "2", "--max-model-len", "1024",
                             "--default-max-tokens", "32",
                             # fast precision (8-bit activations) answers this prompt wrongly at the moment: see report
                             "--precision", "exact"], stdout=subprocess.PIPE, stderr=log, env=env)
    line, deadline = b"", time.time() + 120
    while time.time() < deadline and b"\n" not in line:
        if select.select([proc.stdout], [], [], 0.5)[0]:
            ch = os.read(proc.stdout.fileno(), 1)
            if not ch:
                break
            line += ch
    m = re.search(rb"listening on http://127\.0\.0\.1:(\d+)", line)
    if not m:
        proc.kill()
        log.seek(0)
        pytest.fail(f"server did not start: {line!r} {log.read()!r}")
    assert wait_ready(int(m.group(1)), proc, timeout=120)
    yield openai.OpenAI(base_url=f"http://127.0.0.1:{int(m.group(1))}/v1", api_key="x", max_retries=0, timeout=60)
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert rc == 0


def test_default_model_chat(server):
    assert server.models.list().data[0].id == "SmolLM2-135M-Instruct.Q4_1"
    r = server.chat.completions.create(model="SmolLM2-135M-Instruct.Q4_1", temperature=0,
                                       messages=[{"role": "user", "content": "What is the capital of France?"}])
    text = r.choices[0].message.content
    assert "Paris" in text, text
    assert r.usage.completion_tokens <= 32  # default_max_tokens caps a request that gives none
    chunks = list(server.chat.completions.create(
        model="SmolLM2-135M-Instruct.Q4_1", temperature=0, stream=True,
        messages=[{"role": "user", "content": "What is the capital of France?"}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert "<|im_end|>" not in text
