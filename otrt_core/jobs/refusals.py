"""What the service refuses, as HTTP statuses without HTTP: the API turns each
:class:`ServiceError` into an RFC 9457 problem document."""

from __future__ import annotations

import math
from typing import Any

from otrt_core.errors import Problem


class ServiceError(Exception):
    """A request the service refuses: an HTTP status, a title and what is wrong."""

    status = 400
    title = "Bad Request"

    def __init__(
        self,
        detail: str,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail, self.errors, self.headers = detail, errors or [], headers or {}


class NotFound(ServiceError):
    status, title = 404, "Not Found"


class Conflict(ServiceError):
    status, title = 409, "Conflict"


class PayloadTooLarge(ServiceError):
    status, title = 413, "Content Too Large"


class TooManyRequests(ServiceError):
    """A quota or rate limit of the caller's key; ``Retry-After`` says when to try again."""

    status, title = 429, "Too Many Requests"

    def __init__(self, detail: str, retry_after: float) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, math.ceil(retry_after)))})


class Invalid(ServiceError):
    status, title = 422, "Unprocessable Content"

    @classmethod
    def at(cls, loc: list[str | int], msg: str) -> Invalid:
        return cls(msg, [Problem(tuple(loc), msg).as_dict()])

    @classmethod
    def of(cls, problems: list[Problem], what: str) -> Invalid:
        """Every problem of ``what`` (the job, the sweep) at once."""
        return cls(f"{len(problems)} problem(s) in {what}", [p.as_dict() for p in problems])
