"""End-to-end: the official OpenAI SDK against a real `sluice serve` on 127.0.0.1 (tiny model, stories260K).

Every client has max_retries=0: the SDK would otherwise retry 408/429/5xx and hide failures.
"""
import json
import os
import socket
import subprocess
import time

import openai
import pytest

from sluice_server import MODEL, Server, raw_request


@pytest.fixture(scope="module")
def srv():
    s = Server("--max-body-size", "64KiB")
    yield s
    assert s.stop() == 0, s.stderr()


@pytest.fixture(scope="module")
def client(srv):
    return srv.client()


def test_models(client):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError) as ei:
        client.models.retrieve("no-such-model")
    assert ei.value.code == "model_not_found"


def test_completion_defaults_and_usage(client):
    r = client.completions.create(model=MODEL, prompt="Once upon a time", temperature=0)
    assert r.object == "text_completion" and r.model == MODEL
    assert len(r.choices) == 1 and r.choices[0].index == 0
    # OpenAI's default of 16 tokens; this prompt's greedy continuation runs far longer than that
    assert r.usage.completion_tokens == 16 and r.choices[0].finish_reason == "length"
    assert r.usage.total_tokens == r.usage.prompt_tokens + 16
    assert r.usage.prompt_tokens_details.cached_tokens >= 0
    assert r.choices[0].text.startswith(", there was")
    t = r.model_extra["timings"]
    assert t["e2e_ms"] >= t["ttft_ms"] > 0


def test_completion_prompt_forms(client, srv):
    text = client.completions.create(model=MODEL, prompt="Once upon a time", temperature=0, max_tokens=8).choices[0].text
    import requests
    ids = requests.post(srv.base + "/tokenize", json={"prompt": "Once upon a time"}, timeout=10).json()["tokens"]
    r = client.completions.create(model=MODEL, prompt=ids, temperature=0, max_tokens=8)
    assert r.choices[0].text == text
    assert requests.post(srv.base + "/detokenize", json={"tokens": ids}, timeout=10).json()["prompt"].endswith(
        "Once upon a time")
    r = client.completions.create(model=MODEL, prompt=["Once upon a time", [ids, ids][0]], n=2, temperature=0,
                                  max_tokens=8)
    assert sorted(c.index for c in r.choices) == [0, 1, 2, 3]
    assert all(c.text == text for c in r.choices)
    assert r.usage.completion_tokens == 32


def test_chat(client):
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "system", "content": "Be brief."},
                                                              {"role": "user", "content": "Tell a story."}],
                                       max_tokens=10, temperature=0)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.usage.completion_tokens == len(r.choices) * 0 + r.usage.completion_tokens <= 10
    parts = client.chat.completions.create(
        model=MODEL, messages=[{"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
                               {"role": "user", "content": [{"type": "text", "text": "Tell a story."}]}],
        max_completion_tokens=10, temperature=0)
    assert parts.choices[0].message.content == r.choices[0].message.content


def _stream_text(stream, n):
    texts, finishes, chunks = [""] * n, [None] * n, []
    for ch in stream:
        chunks.append(ch)
        for c in ch.choices:
            d = getattr(c, "delta", None)
            piece = (d.content if d else c.text) or ""
            texts[c.index] += piece
            if c.finish_reason:
                assert finishes[c.index] is None, "two chunks carried finish_reason"
                finishes[c.index] = c.finish_reason
    return texts, finishes, chunks


def test_chat_stream_equals_nonstream(client):
    msgs = [{"role": "user", "content": "Once upon a time"}]
    full = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=40, seed=7, temperature=0.9, n=2)
    stream = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=40, seed=7, temperature=0.9, n=2,
                                            stream=True, stream_options={"include_usage": True})
    texts, finishes, chunks = _stream_text(stream, 2)
    assert texts == [c.message.content for c in sorted(full.choices, key=lambda c: c.index)]
    assert finishes == [c.finish_reason for c in sorted(full.choices, key=lambda c: c.index)]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == full.usage.total_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_completion_stream_and_stop_string(client):
    base = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=40, temperature=0).choices[0].text
    # a stop string of several tokens from the middle of the greedy text: held back, never sent
    stop = base[20:31]
    assert len(stop.strip()) > 5
    r = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=40, temperature=0,
                                  stop=["zzzz", stop])
    assert r.choices[0].text == base[:base.index(stop)] and r.choices[0].finish_reason == "stop"
    texts, finishes, _ = _stream_text(client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=40,
                                                                temperature=0, stop=stop, stream=True), 1)
    assert texts[0] == r.choices[0].text and finishes == ["stop"]


def test_seed_reproducible(client):
    def gen(seed):
        return client.completions.create(model=MODEL, prompt="The dog", max_tokens=24, temperature=1.0, top_p=0.95,
                                         seed=seed, extra_body={"top_k": 40}).choices[0].text
    a, b = gen(1234), gen(1234)
    assert a == b
    assert len({gen(s) for s in (1, 2, 3, 4)}) > 1


def test_sampling_fields_accepted(client):
    r = client.completions.create(model=MODEL, prompt="Lily", max_tokens=12, temperature=0.5, presence_penalty=0.5,
                                  frequency_penalty=0.5, logit_bias={"1": -100}, user="u1",
                                  extra_body={"min_p": 0.05, "repetition_penalty": 1.1, "ignore_eos": True,
                                              "min_tokens": 12, "priority": 0})
    assert r.usage.completion_tokens == 12 and r.choices[0].finish_reason == "length"


def test_bad_requests(client):
    with pytest.raises(openai.BadRequestError) as ei:
        client.completions.create(model=MODEL, prompt="x", temperature=5)
    assert ei.value.param == "temperature" and "temperature" in ei.value.message
    with pytest.raises(openai.BadRequestError) as ei:
        client.completions.create(model=MODEL, prompt="x", max_tokens="ten")
    assert ei.value.param == "max_tokens"
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}],
                                       tools=[{"type": "function", "function": {"name": "f"}}])
    assert ei.value.param == "tools"
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}],
                                       response_format={"type": "json_object"})
    assert ei.value.param == "response_format"
    with pytest.raises(openai.BadRequestError) as ei:
        client.completions.create(model=MODEL, prompt="x", suffix="y")
    assert ei.value.param == "suffix"
    with pytest.raises(openai.BadRequestError) as ei:
        client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=1000)
    assert "256" in ei.value.message and "1000" in ei.value.message
    assert ei.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=[])
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model=MODEL, messages=[{"role": "tool", "content": "x"}])
    assert "role" in ei.value.message
    with pytest.raises(openai.NotFoundError) as ei:
        client.completions.create(model="gpt-4", prompt="x")
    assert ei.value.code == "model_not_found"


def test_raw_errors_are_openai_objects(srv):
    import requests
    for method, path, body, status in [("POST", "/v1/completions", b"{not json", 400),
                                       ("POST", "/v1/completions", b'{"prompt": "a", "prompt": "b"}', 400),
                                       ("POST", "/v1/completions", b"[1, 2]", 400),
                                       ("GET", "/v1/nothing", None, 404),
                                       ("GET", "/v1/completions", None, 405),
                                       ("POST", "/v1/completions", b'{"prompt": "a", "n": 1.5}', 400),
                                       ("POST", "/v1/completions", b'{"prompt": "a", "seed": 99999999999999999999}', 400)]:
        r = requests.request(method, srv.base + path, data=body, timeout=10)
        assert r.status_code == status, (path, body, r.text)
        if status == 405:
            assert r.headers["allow"].startswith("POST")
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["message"]


def test_body_too_large(client):
    with pytest.raises(openai.APIStatusError) as ei:
        client.completions.create(model=MODEL, prompt="a" * 100000, max_tokens=1)
    assert ei.value.status_code == 413


def test_embeddings(client):
    r = client.embeddings.create(model=MODEL, input=["hello", "world", "hello"])
    assert [d.index for d in r.data] == [0, 1, 2]
    v = r.data[0].embedding
    assert abs(sum(x * x for x in v) - 1.0) < 1e-3
    assert r.data[0].embedding == r.data[2].embedding and r.data[0].embedding != r.data[1].embedding
    assert r.usage.prompt_tokens > 0
    b = client.embeddings.create(model=MODEL, input="hello", encoding_format="base64")
    import base64
    import struct
    raw = base64.b64decode(b.data[0].embedding)
    assert len(raw) == 4 * len(v)
    assert max(abs(x - y) for x, y in zip(struct.unpack(f"<{len(v)}f", raw), v)) < 1e-6
    with pytest.raises(openai.BadRequestError) as ei:
        client.embeddings.create(model=MODEL, input="x", dimensions=8)
    assert ei.value.param == "dimensions"


def test_api_key_and_cors(tmp_path):
    keyfile = tmp_path / "keys"
    keyfile.write_text("# operators' keys\n\n  k2  \n")
    s = Server("--api-key", "s3cret", "--api-key-file", str(keyfile), "--cors-allowed-origins",
               "https://a.example, https://b.example")
    try:
        with pytest.raises(openai.AuthenticationError) as ei:
            s.client("wrong").models.list()
        assert ei.value.code == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            s.client("s3cre").completions.create(model=MODEL, prompt="x", max_tokens=1)
        assert s.client("s3cret").models.list().data[0].id == MODEL
        assert s.client("k2").completions.create(model=MODEL, prompt="x", max_tokens=1).usage.completion_tokens == 1
        # /health and /ready stay open
        assert b" 200 " in raw_request(s.port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert b" 200 " in raw_request(s.port, b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        # CORS: preflight answered without a key; allowed origins echoed, others not
        import requests
        pre = requests.options(s.base + "/v1/chat/completions", timeout=10, headers={
            "Origin": "https://b.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"})
        assert pre.status_code == 204
        assert pre.headers["access-control-allow-origin"] == "https://b.example"
        assert "POST" in pre.headers["access-control-allow-methods"]
        ok = requests.get(s.base + "/v1/models", headers={"Origin": "https://a.example",
                                                         "Authorization": "Bearer s3cret"}, timeout=10)
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://a.example"
        other = requests.get(s.base + "/v1/models", headers={"Origin": "https://evil.example",
                                                            "Authorization": "Bearer s3cret"}, timeout=10)
        assert "access-control-allow-origin" not in other.headers
        head = raw_request(s.port, b"HEAD /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n")  # headers only
    finally:
        assert s.stop() == 0


def test_queue_full_429():
    # one running sequence and one waiting request at most: a third concurrent request is refused. The two
    # raw-socket requests each decode 2000 tokens (a good fraction of a second), far longer than the third takes.
    s = Server("--max-num-seqs", "1", "--max-waiting-requests", "1", ctx=2048)
    try:
        client = s.client()
        body = json.dumps({"prompt": "a", "max_tokens": 2000, "ignore_eos": True, "stream": True}).encode()
        req = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
               + str(len(body)).encode() + b"\r\n\r\n" + body)
        socks = []
        for _ in range(2):
            so = socket.create_connection(("127.0.0.1", s.port), timeout=10)
            so.sendall(req)
            head = b""
            while b"data: " not in head:  # the first request must be running before the second comes
                head += so.recv(65536)
                if len(socks) == 1:
                    break
            assert head.startswith(b"HTTP/1.1 200")
            socks.append(so)
        with pytest.raises(openai.RateLimitError) as ei:
            client.completions.create(model=MODEL, prompt="b", max_tokens=4)
        assert ei.value.response.headers.get("retry-after")
        for so in socks:
            so.close()  # a client that goes away cancels its request at once, freeing the queue
        deadline = time.time() + 10
        while True:
            try:
                r = client.completions.create(model=MODEL, prompt="b", max_tokens=4)
                break
            except openai.RateLimitError:
                assert time.time() < deadline
                time.sleep(0.05)
        assert r.usage.completion_tokens == 4
    finally:
        assert s.stop() == 0


def test_bad_model_path_exits_nonzero(tmp_path):
    bad = tmp_path / "missing.gguf"
    p = subprocess.run([os.environ["SLUICE_BIN"], "serve", "-m", str(bad), "--port", "0"], capture_output=True,
                       timeout=30)
    assert p.returncode == 1
    assert b"listening on" in p.stdout and b"missing.gguf" in p.stderr


def test_unknown_serve_flag():
    p = subprocess.run([os.environ["SLUICE_BIN"], "serve", "--max-conections", "3"], capture_output=True, timeout=30)
    assert p.returncode == 2 and b"max-connections" in p.stderr


def test_request_id_header_matches_body(srv):
    import requests
    r = requests.post(srv.base + "/v1/completions", json={"model": MODEL, "prompt": "Once", "max_tokens": 2},
                      timeout=30)
    assert r.status_code == 200
    assert r.headers["X-Request-Id"] == r.json()["id"]
