"""Smoke test of `sluice serve` on the default model (SmolLM2-135M-Instruct, its own ChatML template), through
the official OpenAI SDK (max_retries=0). Fails, naming the setup step, when the model was not fetched."""
import os

import pytest

from sluice_server import DEFAULT_MODEL, Server


@pytest.fixture(scope="module")
def server():
    if not os.path.exists(DEFAULT_MODEL):
        pytest.fail(f"{DEFAULT_MODEL} is missing: run ./setup.sh, which fetches the default model")
    # no -m: the server must find the default model by itself (SLUICE_MODEL points at the cache's copy)
    s = Server("--default-max-tokens", "32",
               # fast precision (8-bit activations, as llama.cpp) answers this low-margin prompt with
               # "L'Étoile, ..." exactly as llama.cpp does (benchmarks/RESULTS.md); exact mode says "Paris"
               "--precision", "exact", model=None, ctx=1024, env={"SLUICE_MODEL": DEFAULT_MODEL}, timeout=120)
    yield s.client()
    assert s.stop() == 0, s.stderr()


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
