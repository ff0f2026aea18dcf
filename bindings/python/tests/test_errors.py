"""Bad arguments raise the right exceptions (mostly before reaching C), engine errors carry the engine's
message as SluiceError subclasses, and the engine keeps serving after each."""

from __future__ import annotations

import time

import pytest

import sluice
from sluice import (
    LLM,
    BadFormatError,
    ContextOverflowError,
    EngineClosedError,
    InvalidArgumentError,
    NotFoundError,
    QueueFullError,
    SamplingParams,
    SluiceError,
    UnsupportedError,
)

from conftest import DATA, STORIES, make_llm


@pytest.mark.parametrize("kw,exc", [
    (dict(temperature=-0.5), InvalidArgumentError),
    (dict(temperature="hot"), TypeError),
    (dict(top_p=0.0), InvalidArgumentError),
    (dict(top_p=1.5), InvalidArgumentError),
    (dict(top_k=-1), InvalidArgumentError),
    (dict(min_p=2.0), InvalidArgumentError),
    (dict(repetition_penalty=0.0), InvalidArgumentError),
    (dict(presence_penalty=3.0), InvalidArgumentError),
    (dict(frequency_penalty=-2.5), InvalidArgumentError),
    (dict(seed=-1), InvalidArgumentError),
    (dict(seed=1.5), TypeError),
    (dict(max_tokens=-2), InvalidArgumentError),
    (dict(max_tokens=4, min_tokens=5), InvalidArgumentError),
    (dict(n=0), InvalidArgumentError),
    (dict(n=True), TypeError),
    (dict(logprobs=21), InvalidArgumentError),
    (dict(stop=""), InvalidArgumentError),
    (dict(stop=[1]), TypeError),
    (dict(stop_token_ids="x"), TypeError),
    (dict(logit_bias={1: 500.0}), InvalidArgumentError),
    (dict(logit_bias=[1]), TypeError),
])
def test_bad_sampling_params(kw: dict, exc: type) -> None:
    with pytest.raises(exc):
        SamplingParams(**kw)


def test_invalid_argument_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        SamplingParams(top_p=0)


def test_bad_engine_settings() -> None:
    with pytest.raises(TypeError, match="n_thread"):
        LLM(STORIES, n_thread=1)  # a misspelt setting is named
    with pytest.raises(TypeError):
        LLM(STORIES, max_num_seqs="4")
    with pytest.raises(InvalidArgumentError, match="tensor_parallel_size = 4294967298 is above 2147483647"):
        LLM(STORIES, tensor_parallel_size=2**32 + 2)  # would wrap to 2 in the C int
    with pytest.raises(InvalidArgumentError, match="max_num_seqs = 2147483648 is above"):
        LLM(STORIES, max_num_seqs=2**31)
    with pytest.raises(InvalidArgumentError, match="kv_dtype"):
        LLM(STORIES, kv_dtype="f8")
    with pytest.raises(InvalidArgumentError, match="precision"):
        LLM(STORIES, precision="sloppy")
    with pytest.raises(TypeError):
        LLM(42)  # type: ignore[arg-type]
    # Ranges the engine checks come back with its message.
    with pytest.raises(InvalidArgumentError, match="block_size"):
        LLM(STORIES, n_threads=1, block_size=3)
    with pytest.raises(InvalidArgumentError, match="max_num_seqs"):
        LLM(STORIES, n_threads=1, max_num_seqs=0)


def test_model_file_errors(tmp_path) -> None:
    missing = str(tmp_path / "nope.gguf")
    with pytest.raises(NotFoundError) as e:
        LLM(missing, n_threads=1)
    assert missing in str(e.value) and isinstance(e.value, FileNotFoundError)
    assert e.value.status == "SL_NOT_FOUND"
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"this is not a gguf file at all" * 10)
    with pytest.raises(BadFormatError):
        LLM(str(junk), n_threads=1)
    with pytest.raises(UnsupportedError, match="gpt2"):  # a vocab-only GPT-2 file: no llama weights
        LLM(str(DATA / "ggml-vocab-gpt-2.gguf"), n_threads=1)


def test_request_errors_and_engine_keeps_serving(llm: LLM) -> None:
    with pytest.raises(ContextOverflowError, match="2048") as e:
        llm.generate("Once upon a time", SamplingParams(max_tokens=5000))
    assert isinstance(e.value, ValueError) and isinstance(e.value, SluiceError)
    with pytest.raises(ContextOverflowError):
        llm.generate("a b c d " * 1000, SamplingParams(max_tokens=None))
    with pytest.raises(InvalidArgumentError, match="vocabulary"):
        llm.generate([[1, 2, 99999]])
    with pytest.raises(InvalidArgumentError):
        llm.generate([[]])
    with pytest.raises(TypeError):
        llm.generate([1, 2, 3])  # ambiguous: a tokenized prompt goes in its own list
    with pytest.raises(TypeError):
        llm.generate(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        llm.generate(["a", "b"], [SamplingParams()])  # one params per prompt, or one for all
    with pytest.raises(InvalidArgumentError):
        llm.stream("a", SamplingParams(n=2))
    with pytest.raises(TypeError):
        llm.tokenize(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        llm.detokenize([-1])
    with pytest.raises(TypeError):
        llm.chat("hello")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        llm.chat([{"role": "user"}])
    # stories260K has no chat template and none was given.
    with pytest.raises(UnsupportedError, match="chat template"):
        llm.chat([{"role": "user", "content": "hi"}])
    assert not llm._live
    assert llm.generate("Lily", SamplingParams(temperature=0, max_tokens=4))[0].outputs[0].token_ids


def test_queue_full() -> None:
    # One sequence runs at a time and one request may wait: a running stream plus a waiting one fill the engine,
    # so a generate() of its own has no room, and says so with the engine's message.
    with make_llm(max_waiting_requests=1, max_num_seqs=1) as llm:
        long = SamplingParams(temperature=0, max_tokens=None, ignore_eos=True)
        s1 = llm.stream("Lily", long)
        next(s1)  # running now
        s2 = llm.stream("Tom", long)  # waiting
        with pytest.raises(QueueFullError, match="queue is full") as e:
            llm.generate("Sue", SamplingParams(max_tokens=4))
        assert e.value.status == "SL_QUEUE_FULL"
        s1.close()
        s2.close()
        # Cancellation takes effect at the engine's next step boundary; until then s2 still holds its place.
        deadline = time.monotonic() + 10
        while llm.stats()["num_waiting"] + llm.stats()["num_running"] and time.monotonic() < deadline:
            time.sleep(0.01)
        # Once they are gone the engine serves again; a batch 40 times the queue bound is fed as room frees up.
        out = llm.generate(["Tom %d" % i for i in range(40)], SamplingParams(temperature=0, max_tokens=4))
        assert [len(o.outputs[0].token_ids) for o in out] == [4] * 40
        assert not llm._live


def test_closed_llm() -> None:
    llm = make_llm()
    llm.close()
    llm.close()  # idempotent
    assert llm.closed
    for call in (lambda: llm.generate("a"), lambda: llm.tokenize("a"), lambda: llm.embed("a"),
                 lambda: llm.model_info, lambda: llm.stats()):
        with pytest.raises(EngineClosedError):
            call()


def test_library_not_found(monkeypatch) -> None:
    monkeypatch.setenv("SLUICE_LIB", "/nonexistent/libsluice.so")
    with pytest.raises(sluice.LibraryNotFoundError, match="SLUICE_LIB|nonexistent"):
        sluice.find_library()
