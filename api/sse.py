"""Server-sent events of anything with an event log: a job's or a sweep's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from fastapi import Request
from fastapi.responses import StreamingResponse

from api.schemas import EventOut

SSE_POLL_SECONDS = 0.5
SSE_KEEPALIVE_SECONDS = 15.0
MAX_EVENT_ID = 2**63 - 1  # event ids are 64-bit integers in the store

EVENTS_RESPONSES = {
    200: {
        "content": {
            "text/event-stream": {
                "schema": {
                    "type": "string",
                    "description": "Live events; `id:` is the event id, `event:` its type.",
                }
            }
        },
        "description": "The events in order; with `Accept: text/event-stream`, a live stream.",
    },
}


async def events_response(
    request: Request,
    after: int,
    events_after: Callable[[int], list],
    has_ended: Callable[[], bool],
) -> list[EventOut] | StreamingResponse:
    """The events after ``after`` as JSON, or with ``Accept: text/event-stream`` as a live
    stream that ends once ``has_ended()`` and every event was sent. Both callables run in
    a thread (they read the database)."""
    past = [EventOut.of(e) for e in await asyncio.to_thread(events_after, after)]
    if "text/event-stream" not in request.headers.get("accept", ""):
        return past
    stream = _frames(request, past, events_after, has_ended)
    return StreamingResponse(
        stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


async def _frames(
    request: Request,
    pending: list[EventOut],
    events_after: Callable[[int], list],
    has_ended: Callable[[], bool],
) -> AsyncIterator[str]:
    last_id, quiet = (pending[-1].id if pending else 0), 0.0
    while True:
        for event in pending:
            yield f"id: {event.id}\nevent: {event.type}\ndata: {event.model_dump_json()}\n\n"
            last_id = event.id
        ended = await asyncio.to_thread(has_ended)
        pending = [EventOut.of(e) for e in await asyncio.to_thread(events_after, last_id)]
        if ended and not pending:
            return
        if pending:
            quiet = 0.0
            continue
        if await request.is_disconnected():
            return
        await asyncio.sleep(SSE_POLL_SECONDS)
        quiet += SSE_POLL_SECONDS
        if quiet >= SSE_KEEPALIVE_SECONDS:
            quiet = 0.0
            yield ": keep-alive\n\n"
