"""LLM: a Sluice engine inside a Python process.

One LLM owns one ``sl_engine_t`` (a loaded model and the engine thread that runs it). Python never runs on
that thread: requests are submitted in queue mode (no callback) and their events read with
``sl_request_next_event`` in a loop with a short timeout. ctypes releases the GIL during each foreign call, so
other Python threads run while one waits, and the engine never waits on Python. The timeout bounds how long a
Ctrl-C takes to be noticed: KeyboardInterrupt arrives between two waits, cancels every request still in flight
and is re-raised.

Ownership: each submitted request is a ``_Request`` registered with its LLM until it is freed; ``close()``
frees the ones still alive before the engine (a request handle must not outlive its engine), so closing an
LLM with a stream still open is safe, and the stream then raises EngineClosedError.
"""

from __future__ import annotations

import collections
import ctypes
import os
import threading
from ctypes import POINTER, byref, c_int32, c_size_t, c_void_p
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Union

from . import _lib as L
from .errors import (EngineClosedError, InternalError, InvalidArgumentError, QueueFullError, SluiceError,
                     error_for_status)
from .outputs import CompletionOutput, ModelInfo, RequestOutput, Timings, Usage
from .params import SamplingParams

__all__ = ["LLM", "TextStream", "default_model_path", "DEFAULT_MODEL_FILE"]

DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# How long one wait for an event lasts before Python gets control back (to notice Ctrl-C). 100 ms keeps Ctrl-C
# prompt while costing ten GIL round trips a second per waiting thread, which is nothing.
_POLL_MS = 100

Prompt = Union[str, Sequence[int]]
Message = Mapping[str, str]


def default_model_path() -> str:
    """The default model's path, by the same rules as the C side: ``$SLUICE_MODEL`` if set, else
    ``($SLUICE_CACHE_DIR, else $XDG_CACHE_HOME/sluice, else ~/.cache/sluice)/models/`` + DEFAULT_MODEL_FILE."""
    env = os.environ.get("SLUICE_MODEL")
    if env:
        return env
    cache = os.environ.get("SLUICE_CACHE_DIR")
    if not cache:
        xdg = os.environ.get("XDG_CACHE_HOME")
        if xdg:
            cache = os.path.join(xdg, "sluice")
        else:
            cache = os.path.join(os.environ.get("HOME") or "/tmp", ".cache", "sluice")
    return os.path.join(cache, "models", DEFAULT_MODEL_FILE)


def _int_setting(name: str, v: Any, lo: int = 0, hi: int = 2**31 - 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError("%s must be an int, not %s" % (name, type(v).__name__))
    if v < lo:
        raise InvalidArgumentError("%s = %d is below %d" % (name, v, lo))
    if v > hi:  # the C field is an int: a larger value would wrap
        raise InvalidArgumentError("%s = %d is above %d" % (name, v, hi))
    return v


def _str_setting(name: str, v: Any) -> Optional[bytes]:
    if v is None:
        return None
    if not isinstance(v, str):
        raise TypeError("%s must be a str, not %s" % (name, type(v).__name__))
    return v.encode()


_KV_DTYPES = {"f32": L.SL_KV_F32, "f16": L.SL_KV_F16, "auto": L.SL_KV_AUTO}
_PRECISIONS = {"fast": L.SL_PRECISION_FAST, "exact": L.SL_PRECISION_EXACT}
# The largest value each C integer field holds (ctypes would wrap a larger one silently).
_FIELD_MAX = {ctypes.c_int: 2**31 - 1, ctypes.c_int64: 2**63 - 1, ctypes.c_uint64: 2**64 - 1}
_INT_SETTINGS = ("n_threads", "max_model_len", "max_num_seqs", "max_num_batched_tokens", "max_waiting_requests",
                 "max_waiting_tokens",
                 "block_size", "kv_cache_bytes", "tensor_parallel_size")


class _Event:
    """A Python copy of one sl_event (the C event is freed as soon as this is made)."""

    __slots__ = ("type", "choice", "text", "tokens", "logprobs", "finish_reason", "stop_reason", "stop_token",
                 "status", "message", "embedding", "usage", "timings")

    def __init__(self, ev: L.EventC) -> None:
        self.type = ev.type
        self.choice = ev.choice
        self.text = ctypes.string_at(ev.text, ev.text_len) if ev.text and ev.text_len else b""
        n = ev.n_tokens
        self.tokens: List[int] = ev.tokens[:n] if n and ev.tokens else []
        self.logprobs: Optional[List[Dict[int, float]]] = None
        if n and ev.logprobs:
            lps = []
            for i in range(n):
                d = {self.tokens[i]: ev.logprobs[i]}
                if ev.top_logprobs:
                    for j in range(ev.n_top):
                        t = ev.top_logprobs[i * ev.n_top + j]
                        d.setdefault(t.token, t.logprob)
                lps.append(d)
            self.logprobs = lps
        self.finish_reason = L.FINISH_REASONS.get(ev.finish_reason)
        self.stop_reason = ev.stop_reason.decode("utf-8", "replace") if ev.stop_reason else None
        self.stop_token = ev.stop_token
        self.status = ev.status
        self.message = ev.message.decode("utf-8", "replace") if ev.message else ""
        self.embedding: Optional[List[float]] = ev.embedding[: ev.n_embd] if ev.embedding and ev.n_embd else None
        u, t = ev.usage, ev.timings
        self.usage = Usage(u.prompt_tokens, u.cached_prompt_tokens, u.completion_tokens)
        self.timings = Timings(t.submitted_us, t.first_scheduled_us, t.prefill_done_us, t.first_token_us,
                               t.finished_us, t.device_us)

    def error(self) -> SluiceError:
        name = L.STATUS_NAMES[self.status] if 0 <= self.status < len(L.STATUS_NAMES) else "SL_INTERNAL"
        return error_for_status(name, self.message or name)


class _Request:
    """One submitted request: its handle, the buffers it was submitted with, and a lock so that freeing it
    (from close(), another thread) never races a wait on it."""

    def __init__(self, llm: "LLM", handle: c_void_p) -> None:
        self._llm = llm
        self._handle: Optional[c_void_p] = handle
        self._lock = threading.Lock()
        self.done = False

    def next_event(self, timeout_ms: int) -> Optional[_Event]:
        """The next event, or None if none came within timeout_ms. Raises EngineClosedError once freed."""
        lib = self._llm._lib
        with self._lock:
            if self._handle is None:
                raise EngineClosedError("the request was released (the LLM was closed)")
            evp = POINTER(L.EventC)()
            try:
                st = lib.sl_request_next_event(self._handle, timeout_ms, byref(evp))
                if st == L.SL_TIMEOUT:
                    return None
                L.check(lib, st)
                ev = _Event(evp.contents)
            finally:
                if evp:  # freed even when Ctrl-C lands between the call and the copy
                    lib.sl_event_free(evp)
        if ev.type == L.SL_EVENT_DONE:
            self.done = True
        return ev

    def wait_event(self) -> _Event:
        """Blocks (GIL released, Ctrl-C noticed every _POLL_MS) until the next event."""
        while True:
            ev = self.next_event(_POLL_MS)
            if ev is not None:
                return ev

    def cancel(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._llm._lib.sl_request_cancel(self._handle)

    def free(self) -> None:
        """Releases the handle (cancelling the request if it still runs). Idempotent."""
        with self._lock:
            h, self._handle = self._handle, None
            if h is not None:
                self._llm._lib.sl_request_free(h)
        self._llm._forget(self)


class TextStream(Iterator[str]):
    """An iterator of the text deltas of one request (see :meth:`LLM.stream`).

    Closing it (``close()``, ``with``, or leaving a ``for`` loop and dropping it) cancels the request. After
    the last delta, ``finish_reason``, ``token_ids``, ``usage`` and ``timings`` describe the whole request.
    """

    def __init__(self, req: _Request) -> None:
        self._req: Optional[_Request] = req
        self.token_ids: List[int] = []
        self.finish_reason: Optional[str] = None
        self.stop_reason: Optional[str] = None
        self.usage = Usage()
        self.timings = Timings()

    def __iter__(self) -> "TextStream":
        return self

    def __next__(self) -> str:
        req = self._req
        if req is None:
            raise StopIteration
        try:
            while True:
                ev = req.wait_event()
                if ev.type in (L.SL_EVENT_TOKENS, L.SL_EVENT_FINISH):
                    self.token_ids += ev.tokens
                if ev.type == L.SL_EVENT_FINISH:
                    self.finish_reason = ev.finish_reason
                    self.stop_reason = ev.stop_reason
                    if ev.finish_reason == "error":
                        raise ev.error()
                if ev.type == L.SL_EVENT_DONE:
                    self.usage, self.timings = ev.usage, ev.timings
                    if ev.status != L.SL_OK:
                        raise ev.error()
                    self.close()
                    raise StopIteration
                if ev.text:
                    # The engine's deltas are UTF-8-complete, so each decodes on its own.
                    return ev.text.decode("utf-8", "replace")
        except BaseException:
            self.close()  # an error or Ctrl-C: the request is cancelled, not left running
            raise

    def close(self) -> None:
        """Cancels the request if it is still running and releases it. Idempotent."""
        req, self._req = self._req, None
        if req is not None:
            req.free()

    def __enter__(self) -> "TextStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class LLM:
    """A loaded model and its engine, for in-process generation, chat, tokenization and embeddings.

    Args:
        model: path of a GGUF file; None = the default model (:func:`default_model_path`).
        **engine_settings: fields of ``sl_engine_params``: n_threads, max_model_len, max_num_seqs,
            max_num_batched_tokens, max_waiting_requests, block_size, kv_cache_bytes (ints; 0 = automatic where
            the engine allows), kv_dtype ("auto", the default: f16 with
            precision "fast", f32 with "exact"; or "f32", "f16"), precision ("fast" or "exact"), chat_template (a
            template name such as "chatml"), served_model_name, enable_prefix_caching (bool); placement:
            devices ("cpu", "cpu,cpu", "0,1": one entry per rank), tensor_parallel_size (int, ranks per
            replica), gpu_memory_utilization (float in (0, 1], GPU replicas).

    Raises:
        TypeError: an unknown setting, or a setting of the wrong type.
        SluiceError: the engine could not start (the subclass says why: NotFoundError, BadFormatError, ...).

    Use it as a context manager, or call :meth:`close`; garbage collection frees it too.

    Example::

        with LLM("tests/data/stories260K.gguf") as llm:
            out = llm.generate(["Once upon a time"], SamplingParams(temperature=0, max_tokens=20))
            print(out[0].outputs[0].text)
    """

    def __init__(self, model: Optional[Union[str, "os.PathLike[str]"]] = None, **engine_settings: Any) -> None:
        self._eng: Optional[c_void_p] = None
        self._live: Dict[int, _Request] = {}
        self._live_lock = threading.Lock()
        self._info: Optional[ModelInfo] = None
        lib = L.load()
        self._lib = lib

        path = default_model_path() if model is None else model
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError("model must be a path (str or os.PathLike), not %s" % type(path).__name__)
        self.model_path = os.fspath(path)

        p = L.EngineParams()
        lib.sl_engine_params_init(byref(p))
        keep = [os.fsencode(self.model_path)]  # the bytes the C strings point to, alive through create
        p.model_path = keep[0]
        for key, v in engine_settings.items():
            if key in _INT_SETTINGS:
                setattr(p, key, _int_setting(key, v, hi=_FIELD_MAX[dict(type(p)._fields_)[key]]))
            elif key == "kv_dtype":
                if v not in _KV_DTYPES:
                    raise InvalidArgumentError("kv_dtype = %r; expected one of %s" % (v, ", ".join(_KV_DTYPES)))
                p.kv_dtype = _KV_DTYPES[v]
            elif key == "precision":
                if v not in _PRECISIONS:
                    raise InvalidArgumentError("precision = %r; expected one of %s" % (v, ", ".join(_PRECISIONS)))
                p.precision = _PRECISIONS[v]
            elif key == "gpu_memory_utilization":
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise TypeError("gpu_memory_utilization must be a number")
                p.gpu_memory_utilization = float(v)
            elif key in ("chat_template", "served_model_name", "devices"):
                b = _str_setting(key, v)
                keep.append(b)
                setattr(p, key, b)
            elif key == "enable_prefix_caching":
                if not isinstance(v, bool):
                    raise TypeError("enable_prefix_caching must be a bool")
                p.enable_prefix_caching = int(v)
            else:
                raise TypeError("LLM() got an unexpected keyword argument %r" % key)

        eng = c_void_p()
        L.check(lib, lib.sl_engine_create(byref(p), byref(eng)))
        self._eng = eng

    # ---- lifetime --------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Cancels and releases every request still alive, stops the engine thread and frees the model.
        Idempotent; the LLM serves nothing afterwards."""
        eng, self._eng = getattr(self, "_eng", None), None
        if eng is None:
            return
        with self._live_lock:
            live = list(self._live.values())
        for r in live:
            r.free()
        self._lib.sl_engine_free(eng)

    @property
    def closed(self) -> bool:
        return self._eng is None

    def __enter__(self) -> "LLM":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def _engine(self) -> c_void_p:
        if self._eng is None:
            raise EngineClosedError("this LLM was closed")
        return self._eng

    def _forget(self, req: _Request) -> None:
        with self._live_lock:
            self._live.pop(id(req), None)

    # ---- model ----------------------------------------------------------------------------------------------
    @property
    def model_info(self) -> ModelInfo:
        """What was loaded: name, architecture, sizes, special tokens, whether it has a chat template, and the KV
        cache made for it (tokens, bytes, element type)."""
        if self._info is None:
            lib = self._lib
            mi = L.ModelInfoC()
            lib.sl_model_info_init(byref(mi))
            L.check(lib, lib.sl_engine_model_info(self._engine(), byref(mi)))

            def s(b: Optional[bytes]) -> str:
                return b.decode("utf-8", "replace") if b else ""

            self._info = ModelInfo(
                name=s(mi.name), architecture=s(mi.architecture), path=s(mi.path), n_params=mi.n_params,
                weight_bytes=mi.weight_bytes, n_vocab=mi.n_vocab, n_ctx_train=mi.n_ctx_train,
                max_model_len=mi.max_model_len, n_embd=mi.n_embd, n_layer=mi.n_layer, n_head=mi.n_head,
                n_head_kv=mi.n_head_kv, bos_id=mi.bos_id if mi.bos_id >= 0 else None,
                eos_id=mi.eos_id if mi.eos_id >= 0 else None, add_bos=bool(mi.add_bos),
                has_chat_template=bool(mi.has_chat_template), kv_cache_tokens=mi.kv_cache_tokens,
                kv_cache_bytes=mi.kv_cache_bytes, kv_dtype=s(mi.kv_dtype),
            )
        return self._info

    def stats(self) -> Dict[str, Union[int, float]]:
        """The engine's counters (``sl_engine_stats``): num_running, num_waiting, kv_cache_usage (0..1),
        prompt_tokens_total, generation_tokens_total, num_preemptions_total, prefix_cache_queries_total,
        prefix_cache_hits_total, steps_total, busy_seconds_total, steps_by_tokens (a histogram: steps of at
        most 1, 2, 4, ..., 2048 tokens, then larger), step_tokens_total."""
        lib = self._lib
        st = L.EngineStatsC()
        lib.sl_engine_stats_init(byref(st))
        L.check(lib, lib.sl_engine_get_stats(self._engine(), byref(st)))
        out: Dict[str, Union[int, float, List[int]]] = {}
        for name, _ in L.EngineStatsC._fields_:
            if name != "struct_size":
                v = getattr(st, name)
                out[name] = list(v) if isinstance(v, ctypes.Array) else v
        return out  # type: ignore[return-value]

    # ---- tokens ---------------------------------------------------------------------------------------------
    def tokenize(self, text: str, add_special: bool = False, parse_special: bool = False) -> List[int]:
        """Token ids of text.

        Args:
            add_special: prepend BOS (and append EOS) where the model's tokenizer asks for it.
            parse_special: the text of special tokens ("<|im_end|>") becomes those tokens.
        """
        if not isinstance(text, str):
            raise TypeError("text must be a str, not %s" % type(text).__name__)
        flags = (L.SL_TOKENIZE_ADD_SPECIAL if add_special else 0) | (L.SL_TOKENIZE_PARSE_SPECIAL if parse_special else 0)
        return self._tokenize_bytes(text.encode("utf-8", "surrogatepass"), flags)

    def _tokenize_bytes(self, data: bytes, flags: int) -> List[int]:
        lib = self._lib
        ids = POINTER(c_int32)()
        n = c_size_t()
        L.check(lib, lib.sl_engine_tokenize(self._engine(), data, len(data), flags, byref(ids), byref(n)))
        try:
            return ids[: n.value] if n.value else []
        finally:
            lib.sl_free(ids)

    def detokenize(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """The text of token ids (bytes that are not valid UTF-8 become U+FFFD)."""
        arr = self._id_array(ids, "ids")
        lib = self._lib
        text = c_void_p()
        n = c_size_t()
        flags = L.SL_DETOKENIZE_SKIP_SPECIAL if skip_special_tokens else 0
        L.check(lib, lib.sl_engine_detokenize(self._engine(), arr, len(arr), flags, byref(text), byref(n)))
        try:
            return ctypes.string_at(text.value, n.value).decode("utf-8", "replace") if text.value else ""
        finally:
            lib.sl_free(text)

    def _id_array(self, ids: Sequence[int], what: str) -> "ctypes.Array[c_int32]":
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
            raise TypeError("%s must be a sequence of int" % what)
        n_vocab = self.model_info.n_vocab
        for i, t in enumerate(ids):
            if isinstance(t, bool) or not isinstance(t, int):
                raise TypeError("%s[%d] must be an int, not %s" % (what, i, type(t).__name__))
            if not 0 <= t < n_vocab:
                raise InvalidArgumentError("%s[%d] = %d is outside the vocabulary [0, %d)" % (what, i, t, n_vocab))
        return (c_int32 * len(ids))(*ids)

    # ---- chat -----------------------------------------------------------------------------------------------
    def apply_chat_template(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        """The text the model's chat template (or the chat_template override) makes of messages."""
        arr, keep = self._messages(messages)
        lib = self._lib
        text = c_void_p()
        L.check(lib, lib.sl_engine_render_chat(self._engine(), arr, len(arr), int(add_generation_prompt),
                                               byref(text)))
        try:
            return ctypes.string_at(text.value).decode("utf-8", "replace")
        finally:
            lib.sl_free(text)

    @staticmethod
    def _messages(messages: Sequence[Message]) -> "tuple[ctypes.Array[L.ChatMessageC], list]":
        if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
            raise TypeError("messages must be a list of {'role': ..., 'content': ...} dicts")
        if not messages:
            raise InvalidArgumentError("messages is empty")
        keep: List[bytes] = []
        arr = (L.ChatMessageC * len(messages))()
        for i, m in enumerate(messages):
            if not isinstance(m, Mapping):
                raise TypeError("messages[%d] must be a dict, not %s" % (i, type(m).__name__))
            for key in ("role", "content"):
                v = m.get(key)
                if not isinstance(v, str):
                    raise TypeError("messages[%d][%r] must be a str" % (i, key))
                if "\0" in v:
                    raise InvalidArgumentError("messages[%d][%r] contains a NUL character" % (i, key))
                b = v.encode("utf-8", "surrogatepass")
                keep.append(b)
                setattr(arr[i], key, b)
        return arr, keep

    # ---- requests -------------------------------------------------------------------------------------------
    def _prompt_ids(self, prompt: Prompt, i: int) -> "tuple[Optional[str], List[int]]":
        """The tokens a prompt runs as: text is tokenized as the engine would (BOS where the model wants it)."""
        if isinstance(prompt, str):
            return prompt, self._tokenize_bytes(prompt.encode("utf-8", "surrogatepass"), L.SL_TOKENIZE_ADD_SPECIAL)
        if isinstance(prompt, Sequence) and not isinstance(prompt, bytes):
            return None, list(prompt)
        raise TypeError("prompt %d must be a str or a list of token ids, not %s" % (i, type(prompt).__name__))

    def _submit(self, ids: List[int], sp: SamplingParams, kind: int = L.SL_REQUEST_GENERATE) -> _Request:
        lib = self._lib
        eng = self._engine()
        sp.validate()
        prompt = self._id_array(ids, "prompt_token_ids")
        if not ids:
            raise InvalidArgumentError("the prompt is empty")
        rp = L.RequestParamsC()
        lib.sl_request_params_init(byref(rp))
        rp.kind = kind
        rp.prompt_tokens = prompt
        rp.n_prompt_tokens = len(ids)
        s = rp.sampling
        s.temperature, s.top_p, s.top_k, s.min_p = sp.temperature, sp.top_p, sp.top_k, sp.min_p
        s.repetition_penalty = sp.repetition_penalty
        s.presence_penalty, s.frequency_penalty = sp.presence_penalty, sp.frequency_penalty
        if sp.seed is not None:
            s.seed, s.has_seed = sp.seed, 1
        bias = None
        if sp.logit_bias:
            bias = (L.LogitBiasC * len(sp.logit_bias))(*[L.LogitBiasC(t, b) for t, b in sp.logit_bias.items()])
            s.logit_bias, s.n_logit_bias = bias, len(bias)
        rp.n = sp.n
        if kind == L.SL_REQUEST_GENERATE:
            rp.max_tokens = -1 if sp.max_tokens is None else sp.max_tokens
        rp.min_tokens = sp.min_tokens
        rp.ignore_eos = int(sp.ignore_eos)
        stops = [x.encode("utf-8", "surrogatepass") for x in sp.stop_strings]
        stop_arr = (ctypes.c_char_p * len(stops))(*stops) if stops else None
        if stop_arr is not None:
            rp.stop, rp.n_stop = stop_arr, len(stops)
        stop_ids = None
        if sp.stop_token_ids:
            stop_ids = (c_int32 * len(sp.stop_token_ids))(*sp.stop_token_ids)
            rp.stop_token_ids, rp.n_stop_token_ids = stop_ids, len(stop_ids)
        rp.logprobs = -1 if sp.logprobs is None else sp.logprobs
        rp.skip_special_tokens = int(sp.skip_special_tokens)

        handle = c_void_p()
        # The engine copies everything it keeps during submit; prompt, bias, stop_arr and stop_ids live past it.
        L.check(lib, lib.sl_request_submit(eng, byref(rp), byref(handle)))
        del prompt, bias, stop_arr, stop_ids, stops
        req = _Request(self, handle)
        with self._live_lock:
            self._live[id(req)] = req
        return req

    @staticmethod
    def _params_list(params: Union[None, SamplingParams, Sequence[SamplingParams]], n: int) -> List[SamplingParams]:
        if params is None:
            return [SamplingParams()] * n
        if isinstance(params, SamplingParams):
            return [params] * n
        if isinstance(params, Sequence) and all(isinstance(p, SamplingParams) for p in params):
            if len(params) != n:
                raise InvalidArgumentError("%d prompts but %d SamplingParams" % (n, len(params)))
            return list(params)
        raise TypeError("params must be a SamplingParams or a list of them")

    def _submit_all(self, n: int, submit: Any, collect: Any) -> None:
        """Submits n requests at once (so the engine batches them) and collects each in order.

        submit(i) -> _Request submits request i; collect(i, req) reads it to its end. When the engine's waiting
        queue is full, the oldest request of ours is collected first to make room (back-pressure, so a batch
        larger than max_waiting_requests still runs); QueueFullError is raised only when none of ours is in
        flight. On any exception, KeyboardInterrupt included, every request still alive is cancelled.
        """
        pending: "collections.deque[tuple[int, _Request]]" = collections.deque()
        try:
            i = 0
            while i < n:
                try:
                    pending.append((i, submit(i)))
                    i += 1
                except QueueFullError:
                    if not pending:
                        raise
                    j, req = pending.popleft()
                    collect(j, req)
            while pending:
                j, req = pending.popleft()
                collect(j, req)
        finally:
            for _, r in pending:
                r.free()

    def _run_all(self, prompts: List["tuple[Optional[str], List[int]]"],
                 params: List[SamplingParams]) -> List[RequestOutput]:
        results: List[Optional[RequestOutput]] = [None] * len(prompts)

        def collect(i: int, req: _Request) -> None:
            try:
                text, ids = prompts[i]
                sp = params[i]
                outs = [CompletionOutput(index=k) for k in range(sp.n)]
                texts = [bytearray() for _ in range(sp.n)]
                ro = RequestOutput(prompt=text, prompt_token_ids=ids, outputs=outs)
                err: Optional[SluiceError] = None
                while True:
                    ev = req.wait_event()
                    if ev.type in (L.SL_EVENT_TOKENS, L.SL_EVENT_FINISH) and 0 <= ev.choice < sp.n:
                        o = outs[ev.choice]
                        texts[ev.choice] += ev.text
                        o.token_ids += ev.tokens
                        if ev.logprobs is not None:
                            o.logprobs = (o.logprobs or []) + ev.logprobs
                        if ev.type == L.SL_EVENT_FINISH:
                            o.finish_reason = ev.finish_reason
                            # vLLM's convention: the stop string, or the stop_token_ids entry that matched;
                            # None for EOS and for length.
                            o.stop_reason = ev.stop_reason if ev.stop_reason is not None else (
                                ev.stop_token if sp.stop_token_ids and ev.stop_token in sp.stop_token_ids else None)
                            if ev.finish_reason == "error" and err is None:
                                err = ev.error()
                    elif ev.type == L.SL_EVENT_DONE:
                        ro.usage, ro.timings = ev.usage, ev.timings
                        if ev.status != L.SL_OK and err is None:
                            err = ev.error()
                        break
            finally:
                req.free()
            if err is not None:
                raise err
            for o, t in zip(outs, texts):
                o.text = t.decode("utf-8", "replace")
                if sp.logprobs is not None and o.logprobs is None:
                    o.logprobs = []
            ro.finished = True
            results[i] = ro

        self._submit_all(len(prompts), lambda i: self._submit(prompts[i][1], params[i]), collect)
        return results  # type: ignore[return-value]

    def generate(self, prompts: Union[Prompt, Sequence[Prompt]],
                 params: Union[None, SamplingParams, Sequence[SamplingParams]] = None) -> List[RequestOutput]:
        """Generates completions for every prompt, all submitted at once so the engine batches them.

        Args:
            prompts: a str, a list of str, or a list whose items are str or lists of token ids (a tokenized
                prompt is run as given: add BOS yourself if the model wants one).
            params: one SamplingParams for all prompts, or one per prompt; None = SamplingParams().

        Returns:
            one RequestOutput per prompt, in order.

        Raises:
            ContextOverflowError: a prompt plus max_tokens exceeds the context (a ValueError).
            QueueFullError: the engine's waiting queue is full of other callers' requests (a batch larger than
                max_waiting_requests is fine: it is fed as room frees up).
            SluiceError: any other engine error. KeyboardInterrupt cancels every request and is re-raised.
        """
        if isinstance(prompts, str):
            plist: List[Prompt] = [prompts]
        elif isinstance(prompts, Sequence) and not isinstance(prompts, bytes):
            if prompts and all(isinstance(x, int) and not isinstance(x, bool) for x in prompts):
                raise TypeError("a list of ints is ambiguous: pass a tokenized prompt as [[id, id, ...]]")
            plist = list(prompts)  # type: ignore[arg-type]
        else:
            raise TypeError("prompts must be a str or a list of prompts, not %s" % type(prompts).__name__)
        plist_ids = [self._prompt_ids(p, i) for i, p in enumerate(plist)]
        return self._run_all(plist_ids, self._params_list(params, len(plist)))

    def _chat_prompt(self, messages: Sequence[Message]) -> "tuple[Optional[str], List[int]]":
        text = self.apply_chat_template(messages, add_generation_prompt=True)
        # As the engine does for chat requests: the template's markers are special tokens, and the template
        # already wrote BOS where it wants one.
        return text, self._tokenize_bytes(text.encode("utf-8", "surrogatepass"), L.SL_TOKENIZE_PARSE_SPECIAL)

    def chat(self, messages: Union[Sequence[Message], Sequence[Sequence[Message]]],
             params: Union[None, SamplingParams, Sequence[SamplingParams]] = None) -> List[RequestOutput]:
        """Generates the assistant's reply to a conversation, rendered with the model's chat template.

        Args:
            messages: one conversation (a list of {"role", "content"} dicts) or a list of conversations.
            params: as for generate.

        Returns:
            one RequestOutput per conversation; ``prompt`` is the rendered template text.
        """
        if isinstance(messages, Sequence) and messages and all(isinstance(m, Mapping) for m in messages):
            convs = [messages]
        elif isinstance(messages, Sequence) and not isinstance(messages, (str, bytes)):
            convs = list(messages)  # type: ignore[assignment]
        else:
            raise TypeError("messages must be a list of {'role': ..., 'content': ...} dicts")
        prompts = [self._chat_prompt(c) for c in convs]  # type: ignore[arg-type]
        return self._run_all(prompts, self._params_list(params, len(prompts)))

    @staticmethod
    def _stream_params(params: Optional[SamplingParams], what: str) -> SamplingParams:
        """The params of a streamed request (one choice only), checked before its prompt is prepared."""
        sp = params if params is not None else SamplingParams()
        if not isinstance(sp, SamplingParams):
            raise TypeError("params must be a SamplingParams")
        if sp.n != 1:
            raise InvalidArgumentError("%s() streams one choice; n = %d" % (what, sp.n))
        return sp

    def stream(self, prompt: Prompt, params: Optional[SamplingParams] = None) -> TextStream:
        """Starts one request and returns an iterator of its text deltas, as they are generated.

        The request is submitted now (bad arguments raise here). Closing the iterator, or leaving a ``with``
        block around it, cancels the request. Only one choice is streamed: params.n must be 1.
        """
        sp = self._stream_params(params, "stream")
        _, ids = self._prompt_ids(prompt, 0)
        return TextStream(self._submit(ids, sp))

    def stream_chat(self, messages: Sequence[Message], params: Optional[SamplingParams] = None) -> TextStream:
        """As :meth:`stream`, for one conversation rendered with the chat template."""
        sp = self._stream_params(params, "stream_chat")
        _, ids = self._chat_prompt(messages)
        return TextStream(self._submit(ids, sp))

    def embed(self, texts: Union[str, Sequence[str]]) -> List[List[float]]:
        """One L2-normalized embedding (the model's pooled hidden state) per text, all submitted at once."""
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, Sequence) or not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be a str or a list of str")
        prompts = [self._prompt_ids(t, i)[1] for i, t in enumerate(texts)]
        sp = SamplingParams()
        out: List[Optional[List[float]]] = [None] * len(prompts)

        def collect(i: int, req: _Request) -> None:
            try:
                while True:
                    ev = req.wait_event()
                    if ev.type == L.SL_EVENT_EMBEDDING:
                        out[i] = ev.embedding
                    elif ev.type == L.SL_EVENT_FINISH and ev.finish_reason == "error":
                        raise ev.error()
                    elif ev.type == L.SL_EVENT_DONE:
                        if ev.status != L.SL_OK:
                            raise ev.error()
                        break
            finally:
                req.free()
            if out[i] is None:
                raise InternalError("the engine finished an embedding request without an embedding")

        self._submit_all(len(prompts), lambda i: self._submit(prompts[i], sp, L.SL_REQUEST_EMBED), collect)
        return out  # type: ignore[return-value]

    def __repr__(self) -> str:
        return "LLM(%r%s)" % (self.model_path, ", closed" if self.closed else "")
