"""Exceptions raised by the Sluice bindings.

Every failure the engine reports is an ``sl_status`` plus the message of ``sl_last_error()``; the bindings turn
it into one :class:`SluiceError` subclass per status, carrying that message. Subclasses also derive from the
built-in exception a Python caller would expect (an invalid argument is a :class:`ValueError`, a missing file a
:class:`FileNotFoundError`, ...), so ``except ValueError`` works without knowing about Sluice.
"""

from __future__ import annotations

from typing import Dict, Optional, Type

__all__ = [
    "SluiceError",
    "LibraryNotFoundError",
    "InvalidArgumentError",
    "OutOfMemoryError",
    "SluiceIOError",
    "BadFormatError",
    "UnsupportedError",
    "NotFoundError",
    "ContextOverflowError",
    "QueueFullError",
    "CancelledError",
    "SluiceTimeoutError",
    "DeviceError",
    "ShuttingDownError",
    "InternalError",
    "EngineClosedError",
]


class SluiceError(Exception):
    """An error reported by the engine (or by the bindings about the engine).

    Attributes:
        status: the ``sl_status`` name, e.g. ``"SL_QUEUE_FULL"`` (``None`` for errors of the bindings alone).
        message: the engine's message (``sl_last_error()``), or the bindings' own.
    """

    status_name: Optional[str] = None

    def __init__(self, message: str, status: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status if status is not None else self.status_name

    def __str__(self) -> str:
        return self.message


class LibraryNotFoundError(SluiceError, OSError):
    """libsluice.so was not found or could not be loaded (see :func:`sluice.find_library`)."""


class InvalidArgumentError(SluiceError, ValueError):
    """SL_INVALID_ARGUMENT: a parameter is out of range or inconsistent."""

    status_name = "SL_INVALID_ARGUMENT"


class OutOfMemoryError(SluiceError, MemoryError):
    """SL_OUT_OF_MEMORY."""

    status_name = "SL_OUT_OF_MEMORY"


class SluiceIOError(SluiceError, OSError):
    """SL_IO: reading a file failed."""

    status_name = "SL_IO"


class BadFormatError(SluiceError, ValueError):
    """SL_BAD_FORMAT: a malformed model file or data."""

    status_name = "SL_BAD_FORMAT"


class UnsupportedError(SluiceError, NotImplementedError):
    """SL_UNSUPPORTED: a feature (architecture, tensor type, template) Sluice does not support."""

    status_name = "SL_UNSUPPORTED"


class NotFoundError(SluiceError, FileNotFoundError):
    """SL_NOT_FOUND: a file or named thing does not exist."""

    status_name = "SL_NOT_FOUND"


class ContextOverflowError(SluiceError, ValueError):
    """SL_CONTEXT_OVERFLOW: prompt plus max_tokens exceed the model's context length."""

    status_name = "SL_CONTEXT_OVERFLOW"


class QueueFullError(SluiceError):
    """SL_QUEUE_FULL: the engine's waiting queue is full; try again later."""

    status_name = "SL_QUEUE_FULL"


class CancelledError(SluiceError):
    """SL_CANCELLED."""

    status_name = "SL_CANCELLED"


class SluiceTimeoutError(SluiceError, TimeoutError):
    """SL_TIMEOUT."""

    status_name = "SL_TIMEOUT"


class DeviceError(SluiceError):
    """SL_DEVICE: the accelerator failed."""

    status_name = "SL_DEVICE"


class ShuttingDownError(SluiceError):
    """SL_SHUTTING_DOWN: the engine is stopping."""

    status_name = "SL_SHUTTING_DOWN"


class InternalError(SluiceError):
    """SL_INTERNAL: a bug in Sluice."""

    status_name = "SL_INTERNAL"


class EngineClosedError(SluiceError, RuntimeError):
    """The :class:`~sluice.LLM` was closed; it serves nothing more."""


_BY_STATUS: Dict[str, Type[SluiceError]] = {
    cls.status_name: cls
    for cls in (
        InvalidArgumentError,
        OutOfMemoryError,
        SluiceIOError,
        BadFormatError,
        UnsupportedError,
        NotFoundError,
        ContextOverflowError,
        QueueFullError,
        CancelledError,
        SluiceTimeoutError,
        DeviceError,
        ShuttingDownError,
        InternalError,
    )
    if cls.status_name
}


def error_for_status(status_name: str, message: str) -> SluiceError:
    """The exception for an ``sl_status`` name (``"SL_QUEUE_FULL"``) and the engine's message."""
    cls = _BY_STATUS.get(status_name, SluiceError)
    return cls(message or status_name, status_name)
