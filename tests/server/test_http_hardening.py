"""Raw-socket tests of the HTTP front: keep-alive, pipelining, limits, strict framing, timeouts, disconnects,
SIGTERM draining. After all of them the server still answers /health and a completion.

The Server helper lives in sluice_server.py, shared by the server tests.
"""
import json
import signal
import socket
import time

import pytest

from sluice_server import MODEL, Server


@pytest.fixture(scope="module")
def srv():
    s = Server("--max-header-size", "4KiB", "--max-body-size", "16KiB", "--header-timeout", "1", "--body-timeout", "1",
               "--keepalive-timeout", "1.5", "--max-connections", "8")
    try:
        yield s
        # after every hostile client: still healthy, still generating
        st, _, body = request(s.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert st == 200
        r = s.client().completions.create(model=MODEL, prompt="Once upon a time", max_tokens=5, temperature=0)
        assert r.usage.completion_tokens == 5
    finally:
        rc = s.stop()  # kills the process if SIGTERM does not end it in time
    assert rc == 0, s.stderr()


def connect(port):
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def read_response(f):
    """Reads one response from a socket file: (status, headers dict, body bytes). Handles chunked bodies."""
    line = f.readline()
    if not line:
        return None, {}, b""
    status = int(line.split()[1])
    headers = {}
    while True:
        h = f.readline()
        if h in (b"\r\n", b""):
            break
        k, v = h.decode().split(":", 1)
        headers[k.strip().lower()] = v.strip()
    if status == 100:
        return status, headers, b""
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            n = int(f.readline().strip(), 16)
            chunk = f.read(n + 2)
            if n == 0:
                break
            body += chunk[:-2]
        return status, headers, body
    return status, headers, f.read(int(headers.get("content-length", "0")))


def request(port, raw):
    with connect(port) as s:
        s.sendall(raw)
        return read_response(s.makefile("rb"))


def is_closed(s, wait=3.0):
    s.settimeout(wait)
    try:
        while True:
            b = s.recv(65536)
            if not b:
                return True
    except (socket.timeout, TimeoutError):
        return False
    except ConnectionResetError:
        return True


def post(path, obj, extra=b""):
    body = json.dumps(obj).encode()
    return (b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + extra +
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def test_keep_alive_and_pipelining(srv):
    with connect(srv.port) as s:
        f = s.makefile("rb")
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(f)[0] == 200
        s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")  # same connection
        st, _, body = read_response(f)
        assert st == 200 and json.loads(body)["data"][0]["id"] == MODEL
        # three requests in one write: answered in order, the slow one in the middle included
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" +
                  post(b"/v1/completions", {"prompt": "Once upon a time", "max_tokens": 6, "temperature": 0}) +
                  b"GET /v1/models/" + MODEL.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        r1, r2, r3 = read_response(f), read_response(f), read_response(f)
        assert r1[0] == 200 and json.loads(r1[2]) == {"status": "ok"}
        assert r2[0] == 200 and json.loads(r2[2])["usage"]["completion_tokens"] == 6
        assert r3[0] == 200 and json.loads(r3[2])["id"] == MODEL


def test_http10_and_connection_close(srv):
    with connect(srv.port) as s:
        s.sendall(b"GET /health HTTP/1.0\r\n\r\n")
        f = s.makefile("rb")
        assert read_response(f)[0] == 200
        assert is_closed(s)
    with connect(srv.port) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert read_response(s.makefile("rb"))[0] == 200
        assert is_closed(s)


def test_chunked_body_and_expect_continue(srv):
    body = json.dumps({"prompt": "Once upon a time", "max_tokens": 3}).encode()
    half = len(body) // 2
    raw = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
           b"%x\r\n" % half + body[:half] + b"\r\n" + b"%x\r\n" % (len(body) - half) + body[half:] + b"\r\n0\r\n\r\n")
    st, _, resp = request(srv.port, raw)
    assert st == 200 and json.loads(resp)["usage"]["completion_tokens"] == 3
    with connect(srv.port) as s:
        f = s.makefile("rb")
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n"
                  % len(body))
        assert read_response(f)[0] == 100
        s.sendall(body)
        assert read_response(f)[0] == 200


def test_oversized_header_and_body(srv):
    with connect(srv.port) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n")
        assert read_response(s.makefile("rb"))[0] == 431
        assert is_closed(s)
    # refused from Content-Length alone, before any of the body is sent
    with connect(srv.port) as s:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
        st, _, body = read_response(s.makefile("rb"))
        assert st == 413 and "error" in json.loads(body)
        assert is_closed(s)
    # Expect: 100-continue with too large a body: refused before the client sends it
    with connect(srv.port) as s:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 99999\r\n\r\n")
        assert read_response(s.makefile("rb"))[0] == 413
    # chunk extensions count against the body limit too
    with connect(srv.port) as s:
        ext = b"1;" + b"x" * 4000 + b"=y\r\na\r\n"
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + ext * 5)
        assert read_response(s.makefile("rb"))[0] == 413
    # a chunked body counts its raw bytes
    big = b"4000\r\n" + b"a" * 0x4000 + b"\r\n"
    with connect(srv.port) as s:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + big + big)
        assert read_response(s.makefile("rb"))[0] == 413


@pytest.mark.parametrize("raw", [
    b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
    b"GET /health HTTP/1.1\r\n\r\n",
    b"POST /v1/completions HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost : x\r\n\r\n",
    b"GET  /health HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /health  HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    b"GARBAGE\r\n\r\n",
], ids=["cl+te", "two-hosts", "no-host", "te-in-1.0", "obs-fold", "space-before-colon", "double-space-1",
        "double-space-2", "bad-chunk", "two-cl", "garbage"])
def test_bad_framing_refused(srv, raw):
    with connect(srv.port) as s:
        s.sendall(raw)
        st, _, _ = read_response(s.makefile("rb"))
        assert st == 400
        assert is_closed(s)


def test_smuggled_request_not_answered(srv):
    # CL+TE with a second request hidden in the body: refused whole, the hidden request never answered
    hidden = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"
    raw = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n"
           % (5 + len(hidden)) + b"0\r\n\r\n" + hidden)
    with connect(srv.port) as s:
        s.sendall(raw)
        f = s.makefile("rb")
        assert read_response(f)[0] == 400
        assert read_response(f)[0] is None


def test_slow_sender_timeouts(srv):
    with connect(srv.port) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHo")
        t = time.time()
        st, _, _ = read_response(s.makefile("rb"))
        assert st == 408 and time.time() - t < 5
    with connect(srv.port) as s:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"prompt\"")
        assert read_response(s.makefile("rb"))[0] == 408
    with connect(srv.port) as s:  # idle keep-alive connections are closed quietly
        t = time.time()
        assert is_closed(s, wait=5) and time.time() - t < 4.5


def test_connection_limit(srv):
    socks = [connect(srv.port) for _ in range(8)]
    try:
        time.sleep(0.2)
        with connect(srv.port) as extra:
            st, _, _ = read_response(extra.makefile("rb"))
            assert st == 503
    finally:
        for s in socks:
            s.close()
    time.sleep(0.2)
    assert request(srv.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 200


def test_disconnect_mid_stream_and_mid_request(srv):
    for _ in range(3):
        with connect(srv.port) as s:
            s.sendall(post(b"/v1/completions", {"prompt": "Once", "max_tokens": 200, "ignore_eos": True, "stream": True}))
            assert s.recv(12).startswith(b"HTTP/1.1 200")
        with connect(srv.port) as s:
            s.sendall(post(b"/v1/completions", {"prompt": "Once", "max_tokens": 200, "ignore_eos": True}))
        with connect(srv.port) as s:
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{")
    assert request(srv.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 200


def test_stream_framing(srv):
    st, h, body = request(srv.port, post(b"/v1/chat/completions", {
        "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": True,
        "stream_options": {"include_usage": True}}))
    assert st == 200 and h["content-type"].startswith("text/event-stream")
    events = [e for e in body.decode().split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert sum(1 for c in chunks for ch in c["choices"] if ch["finish_reason"]) == 1
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4
    assert "timings" in chunks[-1]


def test_sigterm_drains_in_flight():
    # a grace long enough for 1000 tokens on a slow (Debug, loaded) build: the test is about draining, not speed
    s = Server("--shutdown-grace", "60", ctx=2048)
    try:
        _drain_in_flight(s)
    finally:
        s.stop()


def _drain_in_flight(s):
    with connect(s.port) as c:
        c.sendall(post(b"/v1/completions", {"prompt": "Once", "max_tokens": 1000, "ignore_eos": True, "stream": True}))
        f = c.makefile("rb")
        assert f.readline().startswith(b"HTTP/1.1 200")
        s.proc.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        with pytest.raises(OSError):
            connect(s.port).close()  # no longer accepting
        c.settimeout(70)
        rest = f.read()
        events = [e for e in rest.split(b"\n\n") if e.strip()]
        assert events[-2].rstrip().endswith(b"data: [DONE]")  # the stream finished in full
        assert b'"finish_reason":"length"' in rest
    assert s.proc.wait(timeout=70) == 0, s.stderr()


def test_sigterm_grace_expiry_ends_stream_with_error():
    s = Server("--shutdown-grace", "0.2", ctx=2048)
    try:
        _grace_expiry(s)
    finally:
        s.stop()


def _grace_expiry(s):
    with connect(s.port) as c:
        c.sendall(post(b"/v1/completions", {"prompt": "Once", "max_tokens": 2000, "ignore_eos": True, "stream": True}))
        f = c.makefile("rb")
        assert f.readline().startswith(b"HTTP/1.1 200")
        s.proc.send_signal(signal.SIGTERM)
        rest = f.read()
        assert b'data: {"error"' in rest and b"data: [DONE]" in rest
    assert s.proc.wait(timeout=20) == 0, s.stderr()
