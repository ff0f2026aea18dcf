"""What a request gives back: RequestOutput (per prompt), CompletionOutput (per choice), Usage, Timings, and
ModelInfo (what the loaded model is).

Plain dataclasses built from the engine's events, so they can be kept, compared and printed after the engine
is closed. Timings are the engine's own timestamps (``sl_now_us()``'s monotonic clock, microseconds), measured
at each hop of the request, not estimated by Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

__all__ = ["CompletionOutput", "RequestOutput", "Usage", "Timings", "ModelInfo"]


@dataclass
class CompletionOutput:
    """One generated choice of a request.

    Attributes:
        index: the choice's index among ``SamplingParams.n``.
        text: the generated text (stop strings excluded).
        token_ids: the generated token ids.
        finish_reason: "stop" (EOS, stop token or stop string), "length", "abort" or "error".
        stop_reason: the stop string matched, or the stop_token_ids entry that ended the choice; None for EOS
            and length.
        logprobs: if asked, per generated token a dict {token_id: logprob} holding the sampled token and the
            best alternatives; else None.
    """

    index: int
    text: str = ""
    token_ids: List[int] = field(default_factory=list)
    finish_reason: Optional[str] = None
    stop_reason: Optional[object] = None
    logprobs: Optional[List[Dict[int, float]]] = None

    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class Usage:
    """Token counts of one request (completion tokens over all its choices)."""

    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0  # prompt tokens whose KV came from the prefix cache
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Timings:
    """Timestamps of each hop of a request, in microseconds on the engine's monotonic clock (0 = did not
    happen), and the engine step time attributed to it."""

    submitted_us: int = 0
    first_scheduled_us: int = 0
    prefill_done_us: int = 0
    first_token_us: int = 0
    finished_us: int = 0
    device_us: int = 0

    @property
    def queue_s(self) -> float:
        """Seconds from submission to the first engine step that ran the request."""
        return _span(self.submitted_us, self.first_scheduled_us)

    @property
    def time_to_first_token_s(self) -> float:
        """Seconds from submission to the first generated token."""
        return _span(self.submitted_us, self.first_token_us)

    @property
    def e2e_s(self) -> float:
        """Seconds from submission to the last event."""
        return _span(self.submitted_us, self.finished_us)


def _span(a: int, b: int) -> float:
    return (b - a) * 1e-6 if a and b else 0.0


@dataclass
class RequestOutput:
    """The result of one prompt.

    Attributes:
        prompt: the prompt text (for chat, the rendered template), or None when token ids were given.
        prompt_token_ids: the tokens the model was run on.
        outputs: one CompletionOutput per choice, by index.
        usage: token counts.
        timings: the engine's timestamps.
        finished: True once every choice has ended.
    """

    prompt: Optional[str]
    prompt_token_ids: List[int]
    outputs: List[CompletionOutput]
    usage: Usage = field(default_factory=Usage)
    timings: Timings = field(default_factory=Timings)
    finished: bool = False


@dataclass(frozen=True)
class ModelInfo:
    """What the engine loaded (``sl_model_info``)."""

    name: str
    architecture: str
    path: str
    n_params: int
    weight_bytes: int
    n_vocab: int
    n_ctx_train: int
    max_model_len: int
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    bos_id: Optional[int]
    eos_id: Optional[int]
    add_bos: bool
    has_chat_template: bool
    kv_cache_tokens: int = 0  # tokens the KV pool holds (per replica)
    kv_cache_bytes: int = 0   # its bytes
    kv_dtype: str = ""        # "f16" or "f32" (kv_dtype "auto" resolved)
