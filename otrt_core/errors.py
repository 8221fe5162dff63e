"""The one error type for input a user can fix, shared by the spec, data, trainer and service.

``loc`` says where (as a spec location: ``("teacher", "checkpoint")``) and the
message what; the service turns it into a problem of its 422 (or, for
:class:`TooLarge`, 413), the trainer into an ``error`` event with the code
``invalid_input``. Anything else raised is otrt's own fault: ``internal_error``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a user's input: where (``loc``, as in pydantic and in a 422's
    ``errors``) and what. Every layer reports problems as these; the API writes them."""

    loc: tuple[str | int, ...]
    msg: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "loc", tuple(self.loc))

    def under(self, *prefix: str | int) -> Problem:
        """The same problem, located under ``prefix`` (a spec's inside a request body)."""
        return Problem((*prefix, *self.loc), self.msg)

    def as_dict(self) -> dict:
        return {"loc": list(self.loc), "msg": self.msg}


class UserError(Exception):
    """Input a user can fix: where (``loc``) and what (the message)."""

    def __init__(self, message: str, loc: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.message, self.loc = message, loc


class TooLarge(UserError):
    """Input that would cost more than a limit allows (HTTP 413)."""


def nearest_first(name: str, valid: list[str]) -> list[str]:
    """``valid`` ordered by similarity to ``name``, the closest first: what a message
    about an unknown name lists."""
    return sorted(valid, key=lambda v: -difflib.SequenceMatcher(None, name, v).ratio())
