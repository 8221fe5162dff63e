"""/v1/files: uploads (raw body or multipart), listing, reading, deleting."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response

from api.auth import Owner
from api.multipart import ENVELOPE_BYTES, MultipartFile
from api.routes import created_with_links, problems, service
from api.schemas import FileOut, FilePage
from otrt_core.jobs.refusals import Invalid, PayloadTooLarge

router = APIRouter(prefix="/v1/files", tags=["files"])

UPLOAD_BODY = {
    "requestBody": {
        "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
        },
        "required": True,
    }
}


@router.post(
    "",
    status_code=201,
    response_model=FileOut,
    responses=problems(413) | created_with_links("file_id", "get_file", "delete_file"),
    openapi_extra=UPLOAD_BODY,
    summary="Upload a teacher checkpoint or a dataset",
)
async def upload_file(
    request: Request,
    owner: Owner,
    purpose: Annotated[str, Query(pattern="^(teacher|model|dataset)$")],
    x_filename: Annotated[str | None, Header(max_length=1000)] = None,
) -> FileOut:
    """Streams the body (raw, or a multipart ``file`` part) to storage; never spooled whole."""
    svc = service(request)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > svc.max_upload_bytes + ENVELOPE_BYTES:
        raise PayloadTooLarge(f"the upload exceeds the limit of {svc.max_upload_bytes} bytes")
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        body = MultipartFile(request, svc.max_upload_bytes)
        filename = await body.open()
        record = await svc.upload(owner, purpose, filename, body.chunks())
    else:
        if not x_filename:
            raise Invalid.at(["header", "x-filename"], "raw uploads need an X-Filename header")
        record = await svc.upload(owner, purpose, x_filename, request.stream())
    return FileOut.of(record)


@router.get("", response_model=FilePage, responses=problems())
def list_files(
    request: Request,
    owner: Owner,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: str | None = None,
) -> FilePage:
    page = service(request).list_files(owner, limit, after)
    return FilePage(
        data=[FileOut.of(f) for f in page.items], has_more=page.has_more, next_after=page.next_after
    )


@router.get("/{file_id}", response_model=FileOut, responses=problems(404))
def get_file(request: Request, owner: Owner, file_id: str) -> FileOut:
    return FileOut.of(service(request).file(owner, file_id))


@router.delete("/{file_id}", status_code=204, responses=problems(404, 409))
def delete_file(request: Request, owner: Owner, file_id: str) -> Response:
    service(request).delete_file(owner, file_id)
    return Response(status_code=204)
