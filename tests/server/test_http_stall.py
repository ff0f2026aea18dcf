"""A client that never reads its stream: the server's queued output stays bounded (max_output_buffer), the
connection is cut (write_timeout), and the server goes on serving others.

The client shrinks its receive buffer before connecting, so the kernel cannot absorb megabytes of the
stream on its behalf; the request asks for logprobs so each token event is large.
"""
import json
import socket
import time

import pytest

from sluice_server import MODEL, Server


@pytest.fixture(scope="module")
def srv():
    s = Server("--max-output-buffer", "16KiB", "--write-timeout", "1", "--max-num-seqs", "2", ctx=1100)
    yield s
    assert s.stop() == 0, s.stderr()


def stalled_stream(port, max_tokens, rcvbuf=1024):
    body = json.dumps({"model": MODEL, "prompt": "Once upon a time", "max_tokens": max_tokens, "stream": True,
                       "ignore_eos": True, "logprobs": 5, "temperature": 1.0}).encode()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(("127.0.0.1", port))
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body) + body)
    return s


def drain(s, timeout=10):
    """Reads until EOF or reset; returns (bytes read, whether the server ended the connection)."""
    s.settimeout(timeout)
    n = 0
    try:
        while True:
            b = s.recv(65536)
            if not b:
                return n, True
            n += len(b)
    except ConnectionResetError:
        return n, True
    except socket.timeout:
        return n, False


def test_client_that_never_reads_is_cut_off(srv):
    # Read at once with ordinary buffers, the same request streams this many bytes:
    full = stalled_stream(srv.port, 1000, rcvbuf=0)
    full_bytes, ended = drain(full)
    full.close()
    assert ended and full_bytes > 300_000, full_bytes  # ~370 bytes per token event with 5 logprobs

    s = stalled_stream(srv.port, 1000)
    time.sleep(4)  # never read: output piles up, the write stalls past write_timeout
    got, ended = drain(s)
    s.close()
    assert ended, "the server kept a stalled connection open"
    assert got < full_bytes / 2, f"received {got} of {full_bytes} bytes: the stream was not cut"

    # still serving, and the stalled request no longer holds an engine slot
    c = srv.client()
    t = time.time()
    r = c.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=8, temperature=0)
    assert r.usage.completion_tokens == 8 and time.time() - t < 10
