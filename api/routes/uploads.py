"""/v1/uploads: a file of any size in parts, resumably (API.md v1.3, "Uploads in parts")."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from api.auth import Owner
from api.routes import created_with_links, problems, service
from api.schemas import FileOut, StoredPartOut, UploadOut, UploadRequest

router = APIRouter(prefix="/v1/uploads", tags=["uploads"])

PART_BODY = {
    "requestBody": {
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        "required": True,
    }
}


@router.post(
    "",
    status_code=201,
    response_model=UploadOut,
    responses=problems(413) | created_with_links("upload_id", "get_upload", "delete_upload"),
    summary="Begin an upload in parts",
)
def create_upload(request: Request, owner: Owner, body: UploadRequest) -> UploadOut:
    """Declares the whole (size, optional sha256); the answer lists its parts."""
    state = service(request).uploads.create(
        owner, body.filename, body.size, body.sha256, body.part_size
    )
    return UploadOut.of(state)


@router.get("/{upload_id}", response_model=UploadOut, responses=problems(404))
def get_upload(request: Request, owner: Owner, upload_id: str) -> UploadOut:
    """The upload and the parts stored so far: a resumed push sends only the others."""
    return UploadOut.of(service(request).uploads.state(owner, upload_id))


@router.put(
    "/{upload_id}/parts/{number}",
    response_model=StoredPartOut,
    responses=problems(404),
    openapi_extra=PART_BODY,
    summary="Store one part (again: it replaces the first)",
)
async def put_part(
    request: Request,
    owner: Owner,
    upload_id: str,
    number: Annotated[int, Path(ge=1, le=10_000)],
) -> StoredPartOut:
    """The raw body is part ``number``; 422 unless it has exactly the part's size."""
    part = await service(request).uploads.receive_part(owner, upload_id, number, request.stream())
    return StoredPartOut(number=part.number, bytes=part.bytes, etag=part.etag)


@router.post(
    "/{upload_id}/complete",
    status_code=201,
    response_model=FileOut,
    responses=problems(404, 413) | created_with_links("file_id", "get_file", "delete_file"),
    summary="Join the parts into a file (purpose dataset)",
)
async def complete_upload(request: Request, owner: Owner, upload_id: str) -> FileOut:
    """The parts as one ``file_…`` that ``POST /v1/datasets`` registers; 422 names a
    missing part or a sha256 that does not match."""
    return FileOut.of(await service(request).uploads.complete(owner, upload_id))


@router.delete("/{upload_id}", status_code=204, responses=problems(404))
def delete_upload(request: Request, owner: Owner, upload_id: str) -> Response:
    """Aborts the upload and frees its parts."""
    service(request).uploads.abort(owner, upload_id)
    return Response(status_code=204)
