"""stream(): deltas that add up to generate()'s text; closing the iterator cancels the request and the engine
keeps serving; Ctrl-C cancels what is in flight; other Python threads run while one waits on the engine."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from sluice import LLM, EngineClosedError, SamplingParams

from conftest import make_llm


def _wait_idle(llm: LLM, timeout_s: float = 10.0) -> None:
    """Cancellation takes effect at the engine's next step boundary: wait for it to show in the counters."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        st = llm.stats()
        if st["num_running"] == 0 and st["num_waiting"] == 0:
            return
        time.sleep(0.01)
    raise AssertionError("engine still busy after cancellation: %r" % llm.stats())


def test_stream_equals_generate(llm: LLM) -> None:
    p = SamplingParams(temperature=0.8, seed=11, max_tokens=40)
    deltas = list(s := llm.stream("Once upon a time", p))
    ref = llm.generate("Once upon a time", p)[0]
    assert len(deltas) > 1
    assert "".join(deltas) == ref.outputs[0].text
    assert s.token_ids == ref.outputs[0].token_ids
    assert s.finish_reason == ref.outputs[0].finish_reason
    assert s.usage.completion_tokens == ref.usage.completion_tokens


def test_stream_chat_equals_chat() -> None:
    with make_llm(chat_template="chatml") as llm:
        msgs = [{"role": "system", "content": "Tell a story."}, {"role": "user", "content": "A cat"}]
        p = SamplingParams(temperature=0.7, seed=2, max_tokens=20)
        assert "".join(llm.stream_chat(msgs, p)) == llm.chat(msgs, p)[0].outputs[0].text


def test_closing_the_iterator_cancels_and_engine_still_serves(llm: LLM) -> None:
    long = SamplingParams(temperature=0, max_tokens=None, ignore_eos=True)  # ~2000 tokens if left alone
    before = llm.stats()["generation_tokens_total"]
    s = llm.stream("Once upon a time", long)
    got = [next(s) for _ in range(3)]
    assert all(isinstance(d, str) for d in got)
    s.close()
    assert list(s) == []  # a closed stream ends
    _wait_idle(llm)
    assert llm.stats()["generation_tokens_total"] - before < 1500  # it stopped well before its ~2000 tokens

    # Leaving a `with` block, and dropping an unfinished for-loop's iterator, cancel the same way.
    with llm.stream("Once upon a time", long) as s2:
        for i, _ in enumerate(s2):
            if i == 2:
                break
    for i, _ in enumerate(llm.stream("Tom saw", long)):
        if i == 2:
            break
    _wait_idle(llm)
    assert not llm._live  # every request handle was released

    out = llm.generate("Once upon a time", SamplingParams(temperature=0, max_tokens=10))[0]
    assert out.outputs[0].finish_reason == "length" and len(out.outputs[0].token_ids) == 10


def test_close_llm_with_open_stream() -> None:
    llm = make_llm()
    s = llm.stream("Once upon a time", SamplingParams(temperature=0, max_tokens=None, ignore_eos=True))
    next(s)
    llm.close()
    with pytest.raises(EngineClosedError):
        next(s)
    with pytest.raises(EngineClosedError):
        llm.generate("hi")


def test_ctrl_c_cancels_requests_in_flight_and_reraises(llm: LLM) -> None:
    # Eight long requests (~2000 tokens each); a real SIGINT arrives 0.3 s in.
    prompts = ["Once upon a time %d" % i for i in range(8)]
    long = SamplingParams(temperature=0, max_tokens=None, ignore_eos=True)
    before = llm.stats()["generation_tokens_total"]
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    t0 = time.monotonic()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        llm.generate(prompts, long)
    took = time.monotonic() - t0
    timer.join()
    assert took < 5.0  # noticed within a poll, not after the requests ran to their end
    assert not llm._live
    _wait_idle(llm, timeout_s=5.0)  # run to their end, the requests would take ~20 s
    assert llm.stats()["generation_tokens_total"] - before < 8 * 2000 // 2
    assert llm.generate("Lily", SamplingParams(temperature=0, max_tokens=5))[0].outputs[0].token_ids


def test_other_python_threads_run_while_waiting(llm: LLM) -> None:
    # The GIL is released while waiting on the engine: a counting thread makes progress meanwhile, and two
    # threads can generate on one LLM at once.
    stop = threading.Event()
    count = [0]

    def spin() -> None:
        while not stop.is_set():
            count[0] += 1

    results: dict = {}

    def gen(key: str) -> None:
        results[key] = llm.generate(["Tom saw %s" % key] * 4, SamplingParams(temperature=0, max_tokens=300,
                                                                               ignore_eos=True))

    th = [threading.Thread(target=spin), threading.Thread(target=gen, args=("a",)),
          threading.Thread(target=gen, args=("b",))]
    for t in th:
        t.start()
    th[1].join(60)
    th[2].join(60)
    stop.set()
    th[0].join()
    assert count[0] > 1000
    assert {k: len(v) for k, v in results.items()} == {"a": 4, "b": 4}
    assert all(len(o.outputs[0].token_ids) == 300 for v in results.values() for o in v)
