"""ctypes declarations of include/sluice/sluice.h, and where libsluice.so is found.

This module mirrors the public C contract and nothing past it: the structs below are field-for-field copies of
the header's, in the same order, so ctypes lays them out as the C compiler does on this platform. The header's
versioned structs (``struct_size`` first, filled by the ``*_init`` functions) let us check the mirror at load
time: each init writes the C ``sizeof`` into a scratch buffer larger than any of them, and a mismatch with our
ctypes ``sizeof`` means the header changed without this file (raised as an error, rather than corrupting memory).

The library is loaded lazily, on the first engine, so ``import sluice`` works (for type checking, docs) on a
machine without the C build.
"""

from __future__ import annotations

import ctypes
import os
import threading
from ctypes import (
    POINTER,
    Structure,
    c_char_p,
    c_float,
    c_int,
    c_int32,
    c_int64,
    c_size_t,
    c_uint,
    c_uint64,
    c_void_p,
)
from pathlib import Path
from typing import List, Optional

from .errors import LibraryNotFoundError, error_for_status, SluiceError

# Status names in the order of SL_STATUS_MAP (the enum's values). Checked against sl_status_name() at load.
STATUS_NAMES = (
    "SL_OK",
    "SL_INVALID_ARGUMENT",
    "SL_OUT_OF_MEMORY",
    "SL_IO",
    "SL_BAD_FORMAT",
    "SL_UNSUPPORTED",
    "SL_NOT_FOUND",
    "SL_CONTEXT_OVERFLOW",
    "SL_QUEUE_FULL",
    "SL_CANCELLED",
    "SL_TIMEOUT",
    "SL_DEVICE",
    "SL_SHUTTING_DOWN",
    "SL_INTERNAL",
)
SL_OK = 0
SL_TIMEOUT = STATUS_NAMES.index("SL_TIMEOUT")

SL_PRECISION_FAST, SL_PRECISION_EXACT = 0, 1
SL_KV_F32, SL_KV_F16, SL_KV_AUTO = 0, 1, 2
SL_TOKENIZE_ADD_SPECIAL = 1
SL_TOKENIZE_PARSE_SPECIAL = 2
SL_DETOKENIZE_SKIP_SPECIAL = 1
SL_REQUEST_GENERATE, SL_REQUEST_EMBED = 0, 1
SL_EVENT_PROMPT, SL_EVENT_TOKENS, SL_EVENT_FINISH, SL_EVENT_EMBEDDING, SL_EVENT_DONE = 0, 1, 2, 3, 4
FINISH_REASONS = {0: None, 1: "stop", 2: "length", 3: "abort", 4: "error"}


class EngineParams(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("model_path", c_char_p),
        ("served_model_name", c_char_p),
        ("chat_template", c_char_p),
        ("n_threads", c_int),
        ("max_model_len", c_int),
        ("max_num_seqs", c_int),
        ("max_num_batched_tokens", c_int),
        ("max_waiting_requests", c_int),
        ("block_size", c_int),
        ("kv_cache_bytes", c_uint64),
        ("kv_dtype", c_int),
        ("precision", c_int),
        ("enable_prefix_caching", c_int),
        ("max_waiting_tokens", ctypes.c_int64),
        ("devices", c_char_p),  # "cpu", "0,1", "cpu,cpu": entries grouped by tensor_parallel_size into replicas
        ("tensor_parallel_size", c_int),
        ("gpu_memory_utilization", ctypes.c_double),  # GPU replicas: fraction of device memory to fill
    ]


class ModelInfoC(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("name", c_char_p),
        ("architecture", c_char_p),
        ("path", c_char_p),
        ("n_params", c_int64),
        ("weight_bytes", c_uint64),
        ("n_vocab", c_int),
        ("n_ctx_train", c_int),
        ("max_model_len", c_int),
        ("n_embd", c_int),
        ("n_layer", c_int),
        ("n_head", c_int),
        ("n_head_kv", c_int),
        ("bos_id", c_int),
        ("eos_id", c_int),
        ("add_bos", c_int),
        ("has_chat_template", c_int),
        ("kv_cache_tokens", c_int64),
        ("kv_cache_bytes", c_uint64),
        ("kv_dtype", c_char_p),
    ]


class ChatMessageC(Structure):
    _fields_ = [("role", c_char_p), ("content", c_char_p)]


class LogitBiasC(Structure):
    _fields_ = [("token", c_int32), ("bias", c_float)]


class SamplingParamsC(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("temperature", c_float),
        ("top_p", c_float),
        ("top_k", c_int),
        ("min_p", c_float),
        ("repetition_penalty", c_float),
        ("presence_penalty", c_float),
        ("frequency_penalty", c_float),
        ("logit_bias", POINTER(LogitBiasC)),
        ("n_logit_bias", c_size_t),
        ("seed", c_uint64),
        ("has_seed", c_int),
    ]


class RequestParamsC(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("kind", c_int),
        ("prompt_tokens", POINTER(c_int32)),
        ("n_prompt_tokens", c_size_t),
        ("prompt_text", c_char_p),
        ("prompt_text_len", c_size_t),
        ("tokenize_flags", c_uint),
        ("messages", POINTER(ChatMessageC)),
        ("n_messages", c_size_t),
        ("sampling", SamplingParamsC),
        ("n", c_int),
        ("max_tokens", c_int),
        ("min_tokens", c_int),
        ("ignore_eos", c_int),
        ("stop", POINTER(c_char_p)),
        ("n_stop", c_size_t),
        ("stop_token_ids", POINTER(c_int32)),
        ("n_stop_token_ids", c_size_t),
        ("logprobs", c_int),
        ("prompt_logprobs", c_int),
        ("skip_special_tokens", c_int),
        ("priority", c_int),
        ("tenant", c_char_p),
        ("deadline_us", c_int64),
        ("callback", c_void_p),  # always NULL here: the bindings read the request's queue
        ("user_data", c_void_p),
        ("replica", c_int),  # -1: the router picks
    ]


class TopLogprobC(Structure):
    _fields_ = [("token", c_int32), ("logprob", c_float)]


class UsageC(Structure):
    _fields_ = [("prompt_tokens", c_int64), ("cached_prompt_tokens", c_int64), ("completion_tokens", c_int64)]


class TimingsC(Structure):
    _fields_ = [
        ("submitted_us", c_int64),
        ("first_scheduled_us", c_int64),
        ("prefill_done_us", c_int64),
        ("first_token_us", c_int64),
        ("finished_us", c_int64),
        ("device_us", c_int64),
    ]


class EventC(Structure):
    _fields_ = [
        ("type", c_int),
        ("choice", c_int),
        ("text", c_void_p),  # not c_char_p: the delta has a length and is read with string_at
        ("text_len", c_size_t),
        ("tokens", POINTER(c_int32)),
        ("n_tokens", c_size_t),
        ("logprobs", POINTER(c_float)),  # [n_tokens] or NULL
        ("top_logprobs", POINTER(TopLogprobC)),  # [n_tokens][n_top] or NULL
        ("n_top", c_int),
        ("finish_reason", c_int),
        ("stop_reason", c_char_p),
        ("stop_token", c_int32),
        ("status", c_int),
        ("message", c_char_p),
        ("embedding", POINTER(c_float)),  # [n_embd]
        ("n_embd", c_int),
        ("usage", UsageC),
        ("timings", TimingsC),
    ]


class EngineStatsC(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("num_running", c_int),
        ("num_waiting", c_int),
        ("kv_cache_usage", ctypes.c_double),
        ("prompt_tokens_total", c_uint64),
        ("generation_tokens_total", c_uint64),
        ("num_preemptions_total", c_uint64),
        ("prefix_cache_queries_total", c_uint64),
        ("prefix_cache_hits_total", c_uint64),
        ("steps_total", c_uint64),
        ("busy_seconds_total", ctypes.c_double),
        ("steps_by_tokens", c_uint64 * 13),  # SL_STEP_TOKEN_BUCKETS
        ("step_tokens_total", c_uint64),
        ("num_replicas", c_int),
        ("num_replicas_ready", c_int),
    ]


# Larger than any versioned struct of the header (the biggest, sl_request_params, is under 256 bytes on LP64):
# the init functions write into this much scratch space before we trust our own sizeof.
_SCRATCH_BYTES = 4096

_lock = threading.Lock()
_lib: Optional[ctypes.CDLL] = None
_lib_path: Optional[str] = None

LIB_NAMES = ("libsluice.so", "libsluice.so.0")


def _candidates() -> List[Path]:
    """Where the library is looked for, in order (see find_library)."""
    out: List[Path] = []
    env = os.environ.get("SLUICE_LIB")
    if env:
        out.append(Path(env))
        return out  # an explicit path is the only one tried: a silent fallback would hide a wrong setting
    here = Path(__file__).resolve().parent
    out += [here / n for n in LIB_NAMES]
    # The build tree: walk up to the repository root (the folder with include/sluice/sluice.h).
    for d in here.parents:
        if (d / "include" / "sluice" / "sluice.h").is_file():
            out.append(d / "build" / "libsluice.so")
            break
    return out


def find_library() -> str:
    """The path of libsluice.so that :class:`sluice.LLM` will load.

    Looked for, in order: the ``SLUICE_LIB`` environment variable (if set, the only place tried); next to the
    package (``sluice/libsluice.so``, where ``pip install`` puts a library it found at build time); the build
    tree of the source checkout the package lives in (``<repo>/build/libsluice.so``).

    Raises:
        LibraryNotFoundError: none of these exists.
    """
    tried = _candidates()
    for p in tried:
        if p.is_file():
            return str(p)
    raise LibraryNotFoundError(
        "libsluice.so not found (tried: %s); build it (ninja sluice_shared) or set SLUICE_LIB to its path"
        % ", ".join(str(p) for p in tried)
    )


def _declare(lib: ctypes.CDLL) -> None:
    P = POINTER
    sigs = {
        "sl_version": (c_char_p, []),
        "sl_status_name": (c_char_p, [c_int]),
        "sl_status_str": (c_char_p, [c_int]),
        "sl_last_error": (c_char_p, []),
        "sl_free": (None, [c_void_p]),
        "sl_engine_params_init": (None, [c_void_p]),
        "sl_engine_create": (c_int, [P(EngineParams), P(c_void_p)]),
        "sl_engine_free": (None, [c_void_p]),
        "sl_model_info_init": (None, [c_void_p]),
        "sl_engine_model_info": (c_int, [c_void_p, P(ModelInfoC)]),
        "sl_engine_tokenize": (c_int, [c_void_p, c_char_p, c_size_t, c_uint, P(P(c_int32)), P(c_size_t)]),
        "sl_engine_detokenize": (c_int, [c_void_p, P(c_int32), c_size_t, c_uint, P(c_void_p), P(c_size_t)]),
        "sl_engine_render_chat": (c_int, [c_void_p, P(ChatMessageC), c_size_t, c_int, P(c_void_p)]),
        "sl_sampling_params_init": (None, [c_void_p]),
        "sl_request_params_init": (None, [c_void_p]),
        "sl_request_submit": (c_int, [c_void_p, P(RequestParamsC), P(c_void_p)]),
        "sl_request_cancel": (None, [c_void_p]),
        "sl_request_next_event": (c_int, [c_void_p, c_int, P(P(EventC))]),
        "sl_event_free": (None, [P(EventC)]),
        "sl_request_free": (None, [c_void_p]),
        "sl_now_us": (c_int64, []),
        "sl_engine_stats_init": (None, [c_void_p]),
        "sl_engine_get_stats": (c_int, [c_void_p, P(EngineStatsC)]),
    }
    for name, (res, args) in sigs.items():
        fn = getattr(lib, name)
        fn.restype = res
        fn.argtypes = args


def _check_abi(lib: ctypes.CDLL) -> None:
    for i, name in enumerate(STATUS_NAMES):
        got = lib.sl_status_name(i)
        if got is None or got.decode() != name:
            raise SluiceError("libsluice's status %d is %r, the bindings expect %s: rebuild or update the bindings"
                              % (i, got, name))
    for init, cls in (
        ("sl_engine_params_init", EngineParams),
        ("sl_model_info_init", ModelInfoC),
        ("sl_sampling_params_init", SamplingParamsC),
        ("sl_request_params_init", RequestParamsC),
        ("sl_engine_stats_init", EngineStatsC),
    ):
        buf = ctypes.create_string_buffer(_SCRATCH_BYTES)
        getattr(lib, init)(buf)
        size = c_size_t.from_buffer(buf).value
        if size != ctypes.sizeof(cls):
            raise SluiceError("%s: libsluice's struct is %d bytes, the bindings' is %d (header and bindings differ)"
                              % (init, size, ctypes.sizeof(cls)))


def load() -> ctypes.CDLL:
    """Loads (once) and returns libsluice, with every function's signature declared and the ABI checked."""
    global _lib, _lib_path
    with _lock:
        if _lib is None:
            path = find_library()
            try:
                lib = ctypes.CDLL(path)
            except OSError as e:
                raise LibraryNotFoundError("cannot load %s: %s" % (path, e)) from None
            _declare(lib)
            _check_abi(lib)
            _lib, _lib_path = lib, path
        return _lib


def library_path() -> Optional[str]:
    """The path of the loaded library, or None before the first engine."""
    return _lib_path


def raise_status(lib: ctypes.CDLL, st: int) -> None:
    """Raises the SluiceError for a failed call's status, with sl_last_error()'s message (same thread)."""
    name = STATUS_NAMES[st] if 0 <= st < len(STATUS_NAMES) else "SL_STATUS_%d" % st
    msg = lib.sl_last_error()
    text = msg.decode("utf-8", "replace") if msg else ""
    if not text:
        s = lib.sl_status_str(st)
        text = s.decode() if s else name
    raise error_for_status(name, text)


def check(lib: ctypes.CDLL, st: int) -> None:
    """Raises for any status but SL_OK; call it right after the C call, on the same thread."""
    if st != SL_OK:
        raise_status(lib, st)
