"""File downloads with ETag, conditional requests and byte ranges; range errors as problems.

Starlette's ``FileResponse`` serves ranges but answers a malformed or
unsatisfiable ``Range`` in plain text; here the header is checked first with
the same parser, so those answers are problem documents like every other error.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import Request, Response
from fastapi.responses import FileResponse
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable

from api.errors import problem


def download_response(request: Request, path: Path, name: str, sha256: str) -> Response:
    """``path`` as an attachment called ``name``, its ETag the sha256."""
    etag = f'"{sha256}"'
    if etag in [tag.strip() for tag in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers={"ETag": etag})
    http_range = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if http_range is not None and (if_range is None or if_range == etag):
        size = path.stat().st_size
        try:
            FileResponse._parse_range_header(http_range, size)
        except MalformedRangeHeader as error:
            return problem(400, f"malformed Range header: {error.content}")
        except RangeNotSatisfiable:
            return problem(
                416,
                f"the range starts past the file's {size} bytes",
                **{"Content-Range": f"bytes */{size}"},
            )
    return FileResponse(
        path, filename=name, media_type="application/octet-stream", headers={"ETag": etag}
    )
