"""Response bodies of `sluice serve` validated against tests/data/openai-openapi-subset.yaml (a copy of shared/specs/) (JSON Schema
2020-12, which OpenAPI 3.1 schemas are), and the logprobs shapes through the official SDK (max_retries=0)."""
import json
import os

import jsonschema
import openai
import pytest
import requests
import yaml

from sluice_server import MODEL, Server

SPEC = os.path.join(os.path.dirname(__file__), "..", "data", "openai-openapi-subset.yaml")


def _load_components():
    with open(SPEC) as f:
        comps = yaml.safe_load(f)["components"]

    def nullable(node):  # OpenAPI 3.0's `nullable: true`, still used in places, means "or null"
        if isinstance(node, dict):
            for v in node.values():
                nullable(v)
            if node.pop("nullable", False):
                inner = dict(node)
                node.clear()
                node["anyOf"] = [inner, {"type": "null"}]
        elif isinstance(node, list):
            for v in node:
                nullable(v)
    nullable(comps)
    # The subset marks a streamed choice's finish_reason and logprobs as non-null, yet OpenAI (and the SDK's
    # types) send null on every chunk but the last: relaxed here, and nowhere else.
    for name in ("CreateChatCompletionStreamResponse", "CreateCompletionResponse"):
        props = comps["schemas"][name]["properties"]["choices"]["items"]["properties"]
        for k in ("finish_reason", "logprobs"):
            props[k] = {"anyOf": [props[k], {"type": "null"}]}
    return comps


COMPONENTS = _load_components() if os.path.exists(SPEC) else None
if COMPONENTS is None:  # the spec is committed in tests/data: its absence is a broken checkout, not a skip
    raise RuntimeError(f"{SPEC} not found or unreadable")


def check(name, obj):
    schema = {"$ref": f"#/components/schemas/{name}", "components": COMPONENTS}
    errors = [f"{list(e.path)}: {e.message[:300]}" for e in jsonschema.Draft202012Validator(schema).iter_errors(obj)]
    assert not errors, f"{name}: {errors}"


@pytest.fixture(scope="module")
def base():
    s = Server()
    yield s.base
    assert s.stop() == 0, s.stderr()


def sse(text):
    events = [e for e in text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    return [json.loads(e[6:]) for e in events[:-1]]


def test_bodies_match_the_spec(base):
    post = lambda path, body: requests.post(base + path, json=body, timeout=30)
    chat = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4}
    check("CreateCompletionResponse", post("/v1/completions", {"prompt": "Once", "max_tokens": 4}).json())
    check("CreateCompletionResponse", post("/v1/completions", {"prompt": ["a", "b"], "n": 2, "logprobs": 2,
                                                               "max_tokens": 3}).json())
    check("CreateChatCompletionResponse", post("/v1/chat/completions", chat).json())
    check("CreateChatCompletionResponse", post("/v1/chat/completions", dict(chat, logprobs=True, top_logprobs=3)).json())
    for ch in sse(post("/v1/chat/completions", dict(chat, stream=True, logprobs=True,
                                                   stream_options={"include_usage": True})).text):
        check("CreateChatCompletionStreamResponse", ch)
    for ch in sse(post("/v1/completions", {"prompt": "x", "max_tokens": 3, "stream": True}).text):
        check("CreateCompletionResponse", ch)
    check("ListModelsResponse", requests.get(base + "/v1/models", timeout=10).json())
    check("Model", requests.get(base + "/v1/models/" + MODEL, timeout=10).json())
    check("CreateEmbeddingResponse", post("/v1/embeddings", {"input": ["a", "b"]}).json())
    for r in (post("/v1/completions", {"prompt": "a", "temperature": 9}), requests.get(base + "/nope", timeout=10),
              post("/v1/chat/completions", {"messages": "x"})):
        check("ErrorResponse", r.json())


def test_logprobs_shapes(base):
    client = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0, timeout=30)
    r = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=5, temperature=0, logprobs=3)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 5
    assert "".join(lp.tokens) == r.choices[0].text
    assert all(x <= 0 for x in lp.token_logprobs) and all(len(t) <= 3 for t in lp.top_logprobs)
    # greedy: the chosen token is the most likely one
    assert all(max(t.values()) == pytest.approx(x, abs=1e-5) for t, x in zip(lp.top_logprobs, lp.token_logprobs))
    assert lp.text_offset == sorted(lp.text_offset)

    e = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=2, temperature=0, logprobs=1,
                                  echo=True)
    assert e.choices[0].text.startswith("Once upon a time")
    assert e.choices[0].logprobs.token_logprobs[0] is None  # nothing precedes the first prompt token
    assert len(e.choices[0].logprobs.tokens) == r.usage.prompt_tokens + 2

    c = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4,
                                       temperature=0, logprobs=True, top_logprobs=2)
    content = c.choices[0].logprobs.content
    assert len(content) == 4 and all(len(t.top_logprobs) == 2 for t in content)
    assert b"".join(bytes(t.bytes) for t in content).decode() == c.choices[0].message.content
    s = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4,
                                       temperature=0, logprobs=True, top_logprobs=2, stream=True)
    streamed = [t.token for ch in s for c2 in ch.choices if c2.logprobs for t in c2.logprobs.content]
    assert streamed == [t.token for t in content]
    with pytest.raises(openai.BadRequestError) as ei:
        client.completions.create(model=MODEL, prompt="x", logprobs=6)
    assert ei.value.param == "logprobs"
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], logprobs=True,
                                       top_logprobs=21)
    assert ei.value.param == "top_logprobs"
