"""sluice_server.py — what the server tests share: starting a real `sluice serve` on a free loopback port,
waiting until it is ready, stopping it with SIGTERM (bounded waits everywhere), and raw socket requests.

Not a test file itself (pytest collects only test_*.py); the tests import it from their own folder.
"""
import os
import re
import select
import signal
import socket
import subprocess
import tempfile
import time

import openai

DATA = os.environ.get("SLUICE_TEST_DATA", os.path.join(os.path.dirname(__file__), "..", "data"))
TINY = os.path.join(DATA, "stories260K.gguf")
MODEL = "stories260K"
DEFAULT_MODEL = os.path.join(os.environ.get("SLUICE_CACHE_DIR") or os.path.expanduser("~/.cache/sluice"), "models",
                             "SmolLM2-135M-Instruct.Q4_1.gguf")


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


class Server:
    """A `sluice serve` process on a free port; stopped with SIGTERM (bounded waits everywhere)."""

    def __init__(self, *extra, model=TINY, ctx=256, env=None, timeout=60):
        """model None: no -m, the server finds the default model by itself (env may point it somewhere)."""
        self.log = tempfile.TemporaryFile()
        args = [os.environ["SLUICE_BIN"], "serve", "--port", "0", "-t", "2", "--max-model-len", str(ctx)]
        if model is not None:
            args += ["-m", model]
        if model == TINY:
            args += ["--chat-template", "chatml"]
        self.proc = subprocess.Popen(args + list(extra), stdout=subprocess.PIPE, stderr=self.log,
                                     env=dict(os.environ, **(env or {})))
        deadline = time.time() + timeout
        line = b""
        while time.time() < deadline and b"\n" not in line:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if r:
                ch = os.read(self.proc.stdout.fileno(), 1)
                if not ch:
                    break
                line += ch
        m = re.search(rb"listening on http://127\.0\.0\.1:(\d+)", line)
        if not m:
            self.stop()
            raise RuntimeError(f"server did not start: {line!r} {self.stderr()}")
        self.port = int(m.group(1))
        self.base = f"http://127.0.0.1:{self.port}"
        if not wait_ready(self.port, self.proc, timeout):
            self.stop()
            raise RuntimeError(f"server never became ready: {self.stderr()}")

    def stderr(self):
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def client(self, key="none"):
        return openai.OpenAI(base_url=self.base + "/v1", api_key=key, max_retries=0, timeout=30)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode


def raw_request(port, data, timeout=10):
    """Sends raw bytes, returns everything the server sent until it closed or went quiet for 1 s."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    out = b""
    s.settimeout(1.0)
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
    except socket.timeout:
        pass
    s.close()
    return out
