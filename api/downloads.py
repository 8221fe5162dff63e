"""File downloads with ETag, conditional requests and byte ranges; range errors as problems.

Starlette's ``FileResponse`` serves ranges but answers a malformed or
unsatisfiable ``Range`` in plain text; here the header is checked first with
the same parser, so those answers are problem documents like every other error.

A local store's file is served as a file. An S3 store's object is streamed
through from the store (one range, or the whole object), or, with
``OTRT_S3_PRESIGN=on``, answered by a redirect to a presigned URL.
"""

from __future__ import annotations

from fastapi import Request, Response
from fastapi.responses import FileResponse, RedirectResponse, StreamingResponse
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable

from api.errors import problem
from otrt_core.jobs.s3 import S3Storage
from otrt_core.jobs.storage import Storage, StoredObject


def download_response(
    request: Request, storage: Storage, stored: StoredObject, name: str
) -> Response:
    """``stored`` as an attachment called ``name``, its ETag the sha256."""
    etag = f'"{stored.sha256}"'
    if etag in [tag.strip() for tag in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers={"ETag": etag})
    if isinstance(storage, S3Storage) and storage.presign:
        return RedirectResponse(storage.presigned_url(stored.key, name), status_code=307)
    http_range = request.headers.get("range")
    if_range = request.headers.get("if-range")
    ranges = None
    if http_range is not None and (if_range is None or if_range == etag):
        try:
            ranges = FileResponse._parse_range_header(http_range, stored.bytes)
        except MalformedRangeHeader as error:
            return problem(400, f"malformed Range header: {error.content}")
        except RangeNotSatisfiable:
            return problem(
                416,
                f"the range starts past the file's {stored.bytes} bytes",
                **{"Content-Range": f"bytes */{stored.bytes}"},
            )
    if isinstance(storage, S3Storage):
        return _streamed(storage, stored, name, etag, ranges)
    try:
        path = storage.fetch(stored.key, stored.sha256)
    except LookupError:  # recorded, but its file was removed from the store by hand
        return problem(404, f"the stored file of {name!r} is gone")
    return FileResponse(
        path, filename=name, media_type="application/octet-stream", headers={"ETag": etag}
    )


def _streamed(
    storage: S3Storage,
    stored: StoredObject,
    name: str,
    etag: str,
    ranges: list[tuple[int, int]] | None,
) -> StreamingResponse:
    """The object from the store, whole or one range (several ranges get the whole
    object, which HTTP allows); ``ranges`` are half-open."""
    start, end, status = 0, stored.bytes, 200
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Content-Disposition": f'attachment; filename="{name}"',
    }
    if ranges and len(ranges) == 1:
        (start, end), status = ranges[0], 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{stored.bytes}"
    headers["Content-Length"] = str(end - start)
    return StreamingResponse(
        storage.stream(stored.key, start, end),
        status_code=status,
        media_type="application/octet-stream",
        headers=headers,
    )
