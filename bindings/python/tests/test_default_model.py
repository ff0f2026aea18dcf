"""A short smoke test on the default model (SmolLM2-135M-Instruct): LLM() with no path finds it, answers a
question, and chats through the model's own template. Skipped when the model was not fetched."""

from __future__ import annotations

import os

import pytest

from sluice import LLM, SamplingParams, default_model_path

pytestmark = pytest.mark.skipif(not os.path.isfile(default_model_path()),
                                reason="default model not fetched (models/fetch_default_model.sh)")


@pytest.fixture(scope="module")
def llm():
    with LLM(n_threads=1, max_model_len=512, max_num_seqs=4) as m:
        yield m


def test_default_model_info(llm: LLM) -> None:
    info = llm.model_info
    assert info.path == default_model_path()
    assert info.architecture == "llama" and info.n_layer == 30 and info.n_embd == 576 and info.n_vocab == 49152
    assert info.has_chat_template and info.max_model_len == 512
    # the KV cache: what 4 sequences of 512 tokens need, f16 (kv_dtype auto, fast precision), K and V of
    # 30 layers x 3 KV heads x 64 dims per token
    assert info.kv_dtype == "f16" and info.kv_cache_tokens == 4 * 512
    assert info.kv_cache_bytes == info.kv_cache_tokens * 30 * 2 * 3 * 64 * 2


def test_default_model_generates_and_chats(llm: LLM) -> None:
    out = llm.generate("The capital of France is", SamplingParams(temperature=0, max_tokens=6))[0]
    assert "Paris" in out.outputs[0].text
    reply = llm.chat([{"role": "user", "content": "What is the capital of France?"}],
                     SamplingParams(temperature=0, max_tokens=24))[0]
    # The model's own ChatML template, with its default system prompt.
    assert reply.prompt.startswith("<|im_start|>system\n") and "SmolLM" in reply.prompt
    assert reply.prompt.endswith("<|im_start|>assistant\n")
    assert reply.prompt_token_ids == llm.tokenize(reply.prompt, parse_special=True)
    c = reply.outputs[0]
    assert c.text.strip() and len(c.token_ids) == 24 or c.finish_reason == "stop"
    assert "<|im_end|>" not in c.text  # control tokens produce no text
