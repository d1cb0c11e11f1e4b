"""Errors the server can raise, each carrying the status a transport should answer with.

They live apart from the HTTP layer so the DataPlane and codecs can say *what* went wrong (bad
input, unknown model, not ready) without importing a web framework; the FastAPI app maps
``status`` onto the response. ``StartupError`` is different: it ends the process, and its message
is the one sentence Kubernetes shows in the pod status, so it must tell a person what to fix.
"""

from __future__ import annotations

import reprlib
from typing import Any

# Error messages quote what the caller sent, never all of it: a 10 MB string or a list nested a
# thousand deep becomes a few dozen characters (reprlib bounds depth and length, so quoting
# can't recurse or allocate in proportion to the input).
_QUOTE = reprlib.Repr()
_QUOTE.maxlevel = 2
_QUOTE.maxlist = _QUOTE.maxtuple = _QUOTE.maxdict = _QUOTE.maxset = 4
_QUOTE.maxstring = _QUOTE.maxother = 40
_QUOTE.maxlong = 24


def brief(value: Any) -> str:
    """``repr(value)``, truncated: how error messages quote user input."""
    try:
        return _QUOTE.repr(value)
    except Exception:  # a hostile __repr__ can't be sent by JSON, but never fail to report
        return f"<{type(value).__name__}>"


def clip(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters: how messages quote a name or another error's text
    (a model's exception can repeat a huge input), so no error message grows with the input."""
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


class ServerError(Exception):
    """Base class: ``status`` is the HTTP status, ``reason`` a stable label for metrics."""

    status = 500
    reason = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInputError(ServerError):
    """The request body can't be turned into a model input (KServe's InvalidInput)."""

    status = 400
    reason = "invalid_input"


class ModelNotFoundError(ServerError):
    """The path names a model (or version) this server does not serve."""

    status = 404
    reason = "model_not_found"


class PayloadTooLargeError(ServerError):
    """The body is over the configured limit; refused before it is buffered."""

    status = 413
    reason = "payload_too_large"


class UnsupportedEndpointError(ServerError):
    """A KServe endpoint this server knows of but does not offer (e.g. ``:explain``)."""

    status = 501
    reason = "not_implemented"


class ModelNotReadyError(ServerError):
    """The model is still downloading or loading, or failed to load."""

    status = 503
    reason = "model_not_ready"


class InferenceError(ServerError):
    """The model raised something that is not the caller's fault."""

    status = 500
    reason = "inference_error"


class StartupError(Exception):
    """The server cannot serve at all; the message goes to the termination log verbatim."""

    def __init__(self, message: str, *, reason: str = "startup") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
