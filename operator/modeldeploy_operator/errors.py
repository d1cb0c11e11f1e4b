"""Errors the cluster layer raises, free of any client library, so reconcile and the handlers can
decide what to retry without importing the Kubernetes client."""

from __future__ import annotations


class ApiError(Exception):
    """A rejected API request: ``status`` is the HTTP code, ``reason`` the Status reason."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def retryable(self) -> bool:
        """Conflicts, throttling, timeouts and server errors go away by themselves; a 4xx
        rejection of the object (422 Invalid, 403 Forbidden, 400) needs a person."""
        return self.status in (0, 409, 429) or self.status >= 500

    @property
    def namespace_terminating(self) -> bool:
        """Creation refused because the namespace is being deleted: nothing left to reconcile."""
        return self.status == 403 and "being terminated" in self.message


class ObjectGoneError(Exception):
    """The ModelDeployment (or its namespace) went away mid-reconcile; not a failure."""
