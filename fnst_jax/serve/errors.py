"""The service's errors: each one a JSON body and an HTTP status.

A `ServiceError` is something the client can fix or retry (a request too large, not an
image, an unknown model, a full queue). The app turns it into

    {"error": {"status": 413, "code": "upload_too_large", "message": "..."}}

with its status and headers (`Retry-After` for 503). It derives from the project's one
user-facing error base, `fnst_jax.errors.UserError`.
"""

from __future__ import annotations

from fnst_jax.errors import UserError


class ServiceError(UserError):
    """An error answered to the client: HTTP `status`, a stable machine-readable `code`, a
    readable `message`, and extra response `headers`."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def body(self) -> dict:
        """The JSON document the client receives."""
        return {"error": {"status": self.status, "code": self.code, "message": self.message}}


def unavailable(code: str, message: str, retry_after_s: int) -> ServiceError:
    """503 with `Retry-After`: the queue is full ("busy"), or the service is starting
    ("not_ready") or stopping ("shutting_down")."""
    return ServiceError(503, code, message, {"Retry-After": str(max(1, int(retry_after_s)))})


def timed_out(timeout_s: float) -> ServiceError:
    return ServiceError(
        504, "timeout", f"the request was not done within the service's {timeout_s:g} s limit"
    )
