"""The one error type for input a user can fix, shared by the spec, data, trainer and service.

``loc`` says where (as a spec location: ``("teacher", "checkpoint")``) and the
message what; the service turns it into a problem of its 422 (or, for
:class:`TooLarge`, 413), the trainer into an ``error`` event with the code
``invalid_input``. Anything else raised is otrt's own fault: ``internal_error``.
"""

from __future__ import annotations

import difflib


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
