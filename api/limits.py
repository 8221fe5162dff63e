"""Limits that keep one client from hurting the server: body sizes and request rates."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import problem
from otrt_core.jobs.refusals import PayloadTooLarge, ServiceError, TooManyRequests

UPLOAD_PATH = "/v1/files"  # streams its own body under OTRT_MAX_UPLOAD_BYTES
# A part of an upload in parts: streams its own body, bounded by the part's size.
PART_PATH = re.compile(r"/v1/uploads/[^/]+/parts/[0-9]+")


def _is_upload(scope: Scope) -> bool:
    """An upload's body (a file, or a part of one) streams to storage under its own
    limits: ``POST /v1/files`` and ``PUT /v1/uploads/{id}/parts/{n}``."""
    path, method = scope["path"], scope["method"]
    return (path == UPLOAD_PATH and method == "POST") or (
        method == "PUT" and PART_PATH.fullmatch(path) is not None
    )


class BodyLimit:
    """Every request body but an upload's is at most ``limit`` bytes (413 past it).

    A declared ``Content-Length`` over the limit is refused before reading; a
    chunked body is read (at most ``limit`` + one chunk) before the app sees it,
    and refused once it passes the limit. Bodies this small are held in memory.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _is_upload(scope):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await _refuse(self.too_large(), send)
            return
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                await _refuse(self.too_large(), send)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    def too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"the request body exceeds the limit of {self.limit} bytes")


async def _refuse(error: ServiceError, send: Send) -> None:
    response = problem(error.status, error.detail)
    await send(
        {"type": "http.response.start", "status": error.status, "headers": response.raw_headers}
    )
    await send({"type": "http.response.body", "body": response.body})


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """A token bucket per API key: ``rate`` requests a second, ``burst`` at once.

    In this process's memory: with N API replicas behind a balancer, a key may
    make up to N times its rate in all.
    """

    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        self.buckets: dict[str, _Bucket] = {}
        self.lock = threading.Lock()

    def take(self, key_id: str, rate: float, burst: int) -> None:
        """Spends one request of ``key_id``'s; :class:`TooManyRequests` when none is left."""
        now = self.clock()
        with self.lock:
            bucket = self.buckets.setdefault(key_id, _Bucket(tokens=float(burst), at=now))
            bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.at) * rate)
            bucket.at = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return
            wait = (1.0 - bucket.tokens) / rate
        raise TooManyRequests(
            f"this key may make {rate:g} requests a second; try again in {wait:.2f} s", wait
        )
