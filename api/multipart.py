"""The ``file`` part of a ``multipart/form-data`` upload, streamed as it arrives.

Starlette's ``request.form()`` spools the whole body to a temporary file before
a handler sees it, so a body without ``Content-Length`` would be read to its end
before any size limit applies. Here the body is fed chunk by chunk to
python-multipart's push parser, the ``file`` part's bytes are handed on as
they come, and reading stops as soon as the body passes the limit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from otrt_core.jobs.refusals import Invalid, PayloadTooLarge

FILE_FIELD = "file"
# Part headers, boundaries and small fields around the file: what a body may
# carry beyond the upload limit itself.
ENVELOPE_BYTES = 64 * 1024


class MultipartFile:
    """Reads a multipart body up to its ``file`` part: :meth:`open`, then :meth:`chunks`."""

    def __init__(self, request: Request, limit: int) -> None:
        _, options = parse_options_header(request.headers.get("content-type", ""))
        boundary = options.get(b"boundary")
        if not boundary:
            raise Invalid.at(["header", "content-type"], "multipart bodies need a boundary")
        self.body = request.stream()
        self.limit, self.received = limit, 0
        self.filename: str | None = None
        self.pending: list[bytes] = []  # file bytes parsed but not yet handed on
        self.in_file = self.file_ended = False
        self._headers: dict[bytes, bytes] = {}
        self._field = self._value = b""
        self.parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
            },
        )

    async def open(self) -> str:
        """Reads until the ``file`` part begins; returns its filename."""
        while self.filename is None:
            if not await self._feed():
                raise Invalid.at(["body", FILE_FIELD], "multipart uploads carry a 'file' part")
        return self.filename

    async def chunks(self) -> AsyncIterator[bytes]:
        """The ``file`` part's bytes, as they arrive; stops reading where the part ends."""
        while True:
            while self.pending:
                yield self.pending.pop(0)
            if self.file_ended or not await self._feed():
                return

    async def _feed(self) -> bool:
        """Parses the next chunk of the body; false at its end."""
        try:
            chunk = await anext(self.body)
        except StopAsyncIteration:
            return False
        self.received += len(chunk)
        if self.received > self.limit + ENVELOPE_BYTES:
            raise PayloadTooLarge(f"the upload exceeds the limit of {self.limit} bytes")
        try:
            self.parser.write(chunk)
        except MultipartParseError as error:
            raise Invalid.at(["body"], f"the multipart body is malformed: {error}") from None
        return True

    # --- parser callbacks -----------------------------------------------------------------

    def _part_begin(self) -> None:
        self._headers = {}

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field = self._value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        if options.get(b"name") == FILE_FIELD.encode() and self.filename is None:
            self.in_file = True
            self.filename = options.get(b"filename", b"").decode(errors="replace")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self.in_file:
            self.pending.append(bytes(data[start:end]))

    def _part_end(self) -> None:
        if self.in_file:
            self.in_file, self.file_ended = False, True
