"""The engine is freed by close(), by a with block, and by garbage collection; 100 create/close cycles (each
serving a request) do not leak."""

from __future__ import annotations

import gc
import os
import weakref

from sluice import SamplingParams

from conftest import make_llm

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE  # second field: resident pages


def _cycle(i: int) -> None:
    # A small engine (4 sequences of 256 tokens) so each cycle is milliseconds; one request per cycle covers the
    # request and event paths too, and a stream left open is released by close().
    with make_llm(max_num_seqs=4, max_model_len=256) as llm:
        out = llm.generate("Once upon a time", SamplingParams(temperature=0, max_tokens=8))
        assert len(out[0].outputs[0].token_ids) == 8
        s = llm.stream("Tom %d" % i, SamplingParams(temperature=0, max_tokens=50))
        next(s)


def test_no_leak_across_100_create_close_cycles() -> None:
    for i in range(10):  # warm-up: allocator arenas, lazily loaded code, ctypes caches
        _cycle(i)
    gc.collect()
    before = _rss_bytes()
    for i in range(100):
        _cycle(i)
    gc.collect()
    grown = _rss_bytes() - before
    # The model is ~1 MB and a cycle's buffers about as much: leaking even a tenth of that per cycle would show
    # as >10 MB here. 4 MB leaves room for allocator noise.
    assert grown < 4 * 1024 * 1024, "RSS grew by %.1f MB over 100 cycles" % (grown / 2**20)


def test_garbage_collection_frees_the_engine() -> None:
    llm = make_llm()
    s = llm.stream("Once upon a time", SamplingParams(temperature=0, max_tokens=None, ignore_eos=True))
    next(s)
    ref = weakref.ref(llm)
    del llm, s  # the stream holds the LLM (its request does); dropping both frees everything
    gc.collect()
    assert ref() is None


def test_close_is_idempotent_and_with_closes() -> None:
    with make_llm() as llm:
        assert not llm.closed
    assert llm.closed
    llm.close()
    assert repr(llm).endswith("closed)")


def test_placement_settings() -> None:
    # Two CPU replicas, then one replica split over two in-process ranks: both serve the same greedy text as one.
    one = make_llm(n_threads=2)
    want = one.generate("Once upon a time", SamplingParams(temperature=0, max_tokens=12))[0].outputs[0].token_ids
    one.close()
    with make_llm(n_threads=2, devices="cpu,cpu", gpu_memory_utilization=0.5) as llm:
        got = llm.generate(["Once upon a time"] * 4, SamplingParams(temperature=0, max_tokens=12))
        assert all(o.outputs[0].token_ids == want for o in got)
    with make_llm(n_threads=2, devices="cpu,cpu", tensor_parallel_size=2) as llm:
        out = llm.generate("Once upon a time", SamplingParams(temperature=0, max_tokens=12))
        assert len(out[0].outputs[0].token_ids) == 12
    import pytest
    from sluice import SluiceError
    with pytest.raises(SluiceError, match="not a device"):
        make_llm(devices="gpu")
    with pytest.raises(SluiceError, match="gpu_memory_utilization"):
        make_llm(gpu_memory_utilization=1.5)
    with pytest.raises(TypeError):
        make_llm(gpu_memory_utilization="most")
