"""Sluice for Python: the Sluice inference engine inside your own process, without HTTP.

Offline batch generation, evaluation scripts and notebooks get the engine's continuous batching directly::

    from sluice import LLM, SamplingParams

    with LLM() as llm:                     # the default model; or LLM("path/to/model.gguf", n_threads=4)
        outs = llm.generate(["The capital of France is", "1, 2, 3,"], SamplingParams(temperature=0, max_tokens=8))
        for o in outs:
            print(o.prompt, "->", o.outputs[0].text)

The package is a thin ctypes layer over ``libsluice.so`` (the engine API of include/sluice/sluice.h); nothing
is compiled at install time. See :class:`LLM` for the API and :func:`find_library` for where the library is
looked for.
"""

from . import errors
from ._lib import find_library, library_path
from .errors import (
    BadFormatError,
    CancelledError,
    ContextOverflowError,
    DeviceError,
    EngineClosedError,
    InternalError,
    InvalidArgumentError,
    LibraryNotFoundError,
    NotFoundError,
    OutOfMemoryError,
    QueueFullError,
    ShuttingDownError,
    SluiceError,
    SluiceIOError,
    SluiceTimeoutError,
    UnsupportedError,
)
from .llm import DEFAULT_MODEL_FILE, LLM, TextStream, default_model_path
from .outputs import CompletionOutput, ModelInfo, RequestOutput, Timings, Usage
from .params import SamplingParams

__version__ = "0.1.0"

__all__ = [
    "LLM",
    "SamplingParams",
    "RequestOutput",
    "CompletionOutput",
    "Usage",
    "Timings",
    "ModelInfo",
    "TextStream",
    "default_model_path",
    "DEFAULT_MODEL_FILE",
    "find_library",
    "library_path",
    *errors.__all__,  # every exception class, listed once in errors.py
]
