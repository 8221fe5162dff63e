"""``otrt datasets push``: a local ImageFolder tree as one zip, sent in parts, resumably."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from otrt.client import ApiError

CHUNK = 1 << 20


@contextlib.contextmanager
def zipped_tree(directory: Path) -> Iterator[Path]:
    """``directory``'s files in a temporary zip, stored as they are (images are already
    compressed): paths relative to ``directory``, symbolic links and hidden files left out.
    The same files give the same bytes (sorted, with their own times), so a push run
    again finds its upload by the zip's sha256."""
    if not directory.is_dir():
        raise NotADirectoryError(f"{directory} is not a directory")
    with tempfile.TemporaryDirectory(prefix="otrt-push-") as scratch:
        archive = Path(scratch) / f"{directory.resolve().name or 'dataset'}.zip"
        with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as out:
            for path in sorted(directory.rglob("*")):
                relative = path.relative_to(directory)
                hidden = any(part.startswith(".") for part in relative.parts)
                if path.is_file() and not path.is_symlink() and not hidden:
                    out.write(path, relative.as_posix())
        yield archive


@dataclass(frozen=True)
class ResumeRecord:
    """Which upload a file's push is, kept on disk between runs: one small JSON file per
    (server, file sha256)."""

    path: Path
    sha256: str

    @classmethod
    def of(cls, source: Path, server: str, directory: Path | None = None) -> ResumeRecord:
        sha256 = file_sha256(source)
        directory = directory or Path(
            os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"), "otrt", "uploads"
        )
        server_key = hashlib.sha256(server.encode()).hexdigest()[:16]
        return cls(directory / f"{server_key}-{sha256}.json", sha256)

    def upload_id(self) -> str | None:
        try:
            return json.loads(self.path.read_text())["upload_id"]
        except (OSError, ValueError, KeyError):
            return None

    def save(self, upload_id: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"upload_id": upload_id}))

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class PartSender:
    """PUTs the parts of ``upload`` that the server has not stored, ``parallel`` at a
    time, each read from its slice of the file; ``progress(sent, total)`` in bytes.

    A part with a ``url`` (a presigned S3 URL) goes straight to the bucket, without
    the service's credentials; one whose URL has expired (403) is signed again by
    ``GET /v1/uploads/{id}`` and sent once more. The others go through the service."""

    def __init__(
        self,
        client: Any,
        path: Path,
        upload: dict[str, Any],
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.client, self.path, self.upload, self.progress = client, path, upload, progress
        stored = {part["number"] for part in upload["stored"]}
        self.missing = [part for part in upload["parts"] if part["number"] not in stored]
        self.sent = sum(part["bytes"] for part in upload["parts"] if part["number"] in stored)
        self.lock = threading.Lock()

    def send(self, parallel: int) -> None:
        with (
            httpx.Client(timeout=self.client.http.timeout) as bucket,
            ThreadPoolExecutor(max_workers=max(1, parallel)) as pool,
        ):
            for _ in pool.map(lambda part: self._send(part, bucket), self.missing):
                pass  # the first failure raises here

    def _send(self, part: dict[str, Any], bucket: httpx.Client) -> None:
        with self.path.open("rb") as handle:
            handle.seek((part["number"] - 1) * self.upload["part_size"])
            data = handle.read(part["bytes"])
        if part.get("url"):
            self._put_to_bucket(part, data, bucket)
        else:
            url = f"/v1/uploads/{self.upload['id']}/parts/{part['number']}"
            headers = {"Content-Type": "application/octet-stream"}
            self.client._request("PUT", url, content=data, headers=headers)
        with self.lock:
            self.sent += part["bytes"]
            if self.progress:
                self.progress(self.sent, self.upload["size"])

    def _put_to_bucket(self, part: dict[str, Any], data: bytes, bucket: httpx.Client) -> None:
        number, url = part["number"], part["url"]
        answer = bucket.put(url, content=data)
        if answer.status_code == 403:  # the URL expired during a long push: signed again
            fresh = self.client._request("GET", f"/v1/uploads/{self.upload['id']}").json()
            url = next(p.get("url") for p in fresh["parts"] if p["number"] == number) or url
            answer = bucket.put(url, content=data)
        if answer.is_error:
            detail = f"the object store refused part {number}: {answer.text[:300]}"
            raise ApiError(answer.status_code, {"detail": detail})
