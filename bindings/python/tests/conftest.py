"""Shared fixtures of the bindings' tests.

CTest runs each test_*.py as py_<name> with SLUICE_LIB (the built libsluice.so), SLUICE_TEST_DATA (tests/data),
SLUICE_BUILD_DIR and PYTHONPATH=bindings/python; run by hand, the same defaults are derived from the checkout.
Almost everything uses tests/data/stories260K.gguf (a 260K-parameter llama: loads in milliseconds, decodes
thousands of tokens a second), with one compute thread: the suite shares 2 cores with the rest of CI, and the
bindings' behaviour does not depend on the thread count.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import pytest

import sluice

REPO = Path(__file__).resolve().parents[3]
DATA = Path(os.environ.get("SLUICE_TEST_DATA") or REPO / "tests" / "data")
STORIES = str(DATA / "stories260K.gguf")


def make_llm(**kw: Any) -> sluice.LLM:
    """An LLM over stories260K with one thread unless told otherwise."""
    kw.setdefault("n_threads", 1)
    return sluice.LLM(kw.pop("model", STORIES), **kw)


@pytest.fixture(scope="module")
def llm() -> Iterator[sluice.LLM]:
    with make_llm() as m:
        yield m
