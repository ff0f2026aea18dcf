"""SamplingParams: how one request is sampled and when it stops.

The names and defaults follow the offline APIs Python users already know (vLLM's ``SamplingParams``), mapped
onto ``sl_sampling_params`` and ``sl_request_params``. Values are checked here, before anything reaches C, so a
mistake raises at the line that made it: a wrong type is a :class:`TypeError`, a value out of range an
:class:`~sluice.InvalidArgumentError` (a :class:`ValueError`). The engine checks again; its ranges are the
source of truth and the ones below copy them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Union

from .errors import InvalidArgumentError

__all__ = ["SamplingParams"]

# Bounds the engine enforces (batching/engine.c); repeated so the error comes from the caller's line.
_MAX_N = 128  # choices per request
_MAX_LOGPROBS = 20  # alternatives per token
_MAX_STOP = 64  # stop strings
_MAX_STOP_IDS = 1024  # stop token ids
_SEED_MAX = 2**64 - 1  # sl_sampling_params.seed is a uint64_t


def _number(name: str, v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError("%s must be a number, not %s" % (name, type(v).__name__))
    f = float(v)
    if math.isnan(f):
        raise InvalidArgumentError("%s is NaN" % name)
    return f


def _integer(name: str, v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError("%s must be an int, not %s" % (name, type(v).__name__))
    return int(v)


def _in_range(name: str, v: float, lo: float, hi: float, lo_open: bool = False) -> None:
    if (v <= lo if lo_open else v < lo) or v > hi:
        raise InvalidArgumentError("%s = %r is outside %s%g, %g]" % (name, v, "(" if lo_open else "[", lo, hi))


@dataclass
class SamplingParams:
    """Sampling and stopping parameters of a request.

    Args:
        temperature: 0 is greedy; higher is more random. [0, 100].
        top_p: nucleus sampling mass, (0, 1].
        top_k: keep the k most likely tokens; 0 = off.
        min_p: drop tokens below min_p times the best one's probability; 0 = off. [0, 1].
        repetition_penalty: > 1 penalizes tokens seen in the prompt or output; 1 = off. (0, 10].
        presence_penalty: OpenAI semantics over generated tokens, [-2, 2].
        frequency_penalty: OpenAI semantics over generated tokens, [-2, 2].
        seed: makes sampling reproducible (each choice seeded from (seed, index)); None = a fresh seed.
        max_tokens: tokens to generate per choice; None = up to the context length.
        min_tokens: EOS and stop tokens are masked until this many tokens were generated.
        stop: stop string(s); the matched text is not returned.
        stop_token_ids: extra token ids that end generation.
        ignore_eos: keep generating past EOS.
        logprobs: None = none; k >= 0 = each sampled token's logprob plus the k best alternatives (k <= 20).
        n: completions per prompt.
        logit_bias: token id -> bias added to its logit, [-100, 100].
        skip_special_tokens: control tokens (EOS, <|im_end|>) produce no text.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: Optional[int] = None
    max_tokens: Optional[int] = 16
    min_tokens: int = 0
    stop: Optional[Union[str, Sequence[str]]] = None
    stop_token_ids: Optional[Sequence[int]] = None
    ignore_eos: bool = False
    logprobs: Optional[int] = None
    n: int = 1
    logit_bias: Optional[Dict[int, float]] = None
    skip_special_tokens: bool = True
    _stop_list: List[str] = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Checks every field (called on construction; call again after changing fields).

        Raises:
            TypeError: a field has the wrong type.
            InvalidArgumentError: a value is out of range (a ValueError).
        """
        _in_range("temperature", _number("temperature", self.temperature), 0, 100)
        _in_range("top_p", _number("top_p", self.top_p), 0, 1, lo_open=True)
        if _integer("top_k", self.top_k) < 0:
            raise InvalidArgumentError("top_k = %d is negative" % self.top_k)
        _in_range("min_p", _number("min_p", self.min_p), 0, 1)
        _in_range("repetition_penalty", _number("repetition_penalty", self.repetition_penalty), 0, 10, lo_open=True)
        _in_range("presence_penalty", _number("presence_penalty", self.presence_penalty), -2, 2)
        _in_range("frequency_penalty", _number("frequency_penalty", self.frequency_penalty), -2, 2)
        if self.seed is not None:
            _in_range("seed", _integer("seed", self.seed), 0, _SEED_MAX)
        if self.max_tokens is not None and _integer("max_tokens", self.max_tokens) < 0:
            raise InvalidArgumentError("max_tokens = %d is negative" % self.max_tokens)
        if _integer("min_tokens", self.min_tokens) < 0:
            raise InvalidArgumentError("min_tokens = %d is negative" % self.min_tokens)
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise InvalidArgumentError("min_tokens = %d exceeds max_tokens = %d" % (self.min_tokens, self.max_tokens))
        _in_range("n", _integer("n", self.n), 1, _MAX_N)
        if self.logprobs is not None:
            _in_range("logprobs", _integer("logprobs", self.logprobs), 0, _MAX_LOGPROBS)
        if not isinstance(self.ignore_eos, bool):
            raise TypeError("ignore_eos must be a bool")
        if not isinstance(self.skip_special_tokens, bool):
            raise TypeError("skip_special_tokens must be a bool")

        stops: List[str]
        if self.stop is None:
            stops = []
        elif isinstance(self.stop, str):
            stops = [self.stop]
        elif isinstance(self.stop, (list, tuple)):
            stops = list(self.stop)
        else:
            raise TypeError("stop must be a str or a list of str, not %s" % type(self.stop).__name__)
        for s in stops:
            if not isinstance(s, str):
                raise TypeError("stop strings must be str, not %s" % type(s).__name__)
            if not s:
                raise InvalidArgumentError("a stop string is empty")
            if "\0" in s:
                raise InvalidArgumentError("a stop string contains a NUL character")
        if len(stops) > _MAX_STOP:
            raise InvalidArgumentError("%d stop strings; at most %d" % (len(stops), _MAX_STOP))
        self._stop_list = stops

        if self.stop_token_ids is not None:
            if isinstance(self.stop_token_ids, (str, bytes)) or not isinstance(self.stop_token_ids, (list, tuple)):
                raise TypeError("stop_token_ids must be a list of int")
            for t in self.stop_token_ids:
                if _integer("stop_token_ids[]", t) < 0:
                    raise InvalidArgumentError("stop token id %d is negative" % t)
            if len(self.stop_token_ids) > _MAX_STOP_IDS:
                raise InvalidArgumentError("%d stop token ids; at most %d" % (len(self.stop_token_ids), _MAX_STOP_IDS))
        if self.logit_bias is not None:
            if not isinstance(self.logit_bias, dict):
                raise TypeError("logit_bias must be a dict {token_id: bias}")
            for tok, b in self.logit_bias.items():
                if _integer("logit_bias token", tok) < 0:
                    raise InvalidArgumentError("logit_bias token %d is negative" % tok)
                _in_range("logit_bias[%d]" % tok, _number("logit_bias value", b), -100, 100)

    @property
    def stop_strings(self) -> List[str]:
        """The stop strings as a list (``stop`` may be one string)."""
        return list(self._stop_list)
