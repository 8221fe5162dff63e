"""The Python SDK: ``otrt.Client`` over httpx, covering API.md. Imports no torch.

>>> client = otrt.Client("http://127.0.0.1:8000", api_key=None)
>>> teacher = client.create_job({"mode": "supervised", "student": {"architecture": "mlp"},
...                              "dataset": {"name": "digits"}})
>>> client.wait(teacher["id"])["status"]
'succeeded'

Responses are the API's JSON as dicts. Every error is an :class:`ApiError`
(by status: :class:`Unauthorized`, :class:`NotFound`, :class:`Conflict`,
:class:`Invalid`, :class:`TooLarge`) carrying the RFC 9457 problem document.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

CHUNK = 1 << 20
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
DATASET_ENDED = frozenset({"ready", "failed"})


class ApiError(Exception):
    """An error answer: ``status``, and the ``problem`` document (``detail``, ``errors``)."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status, self.problem = status, problem
        self.detail = str(problem.get("detail") or problem.get("title") or f"HTTP {status}")
        self.errors: list[dict[str, Any]] = list(problem.get("errors") or [])
        where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in self.errors)
        super().__init__(f"{status} {self.detail}" + (f" ({where})" if where else ""))


class Unauthorized(ApiError): ...


class NotFound(ApiError): ...


class Conflict(ApiError): ...


class Invalid(ApiError): ...


class TooLarge(ApiError): ...


ERRORS = {401: Unauthorized, 404: NotFound, 409: Conflict, 413: TooLarge, 422: Invalid}


class JobTimeout(TimeoutError):
    """:meth:`Client.wait` (or ``client.sweeps.wait``) ran out of time; ``job`` is the last
    state seen of the job (or sweep)."""

    def __init__(self, job: dict[str, Any]) -> None:
        super().__init__(f"{job['id']} is still {job['status']}")
        self.job = job


class Client:
    """A connection to one otrt server; usable as a context manager."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self.http.request(method, path, **kwargs)
        _raise_for_problem(response)
        return response

    def _pages(self, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Every item of a cursor-paginated list, fetching pages as needed."""
        params = {k: v for k, v in params.items() if v is not None}
        while True:
            page = self._request("GET", path, params=params).json()
            yield from page["data"]
            if not page["has_more"]:
                return
            params["after"] = page["next_after"]

    # --- files -------------------------------------------------------------------------

    def upload(
        self,
        path: str | Path,
        purpose: str,
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, Any]:
        """Streams a file up (``purpose``: teacher, model or dataset); ``progress(sent, total)``."""
        path = Path(path)
        total = path.stat().st_size

        def chunks() -> Iterator[bytes]:
            sent = 0
            with path.open("rb") as handle:
                while chunk := handle.read(CHUNK):
                    sent += len(chunk)
                    if progress:
                        progress(sent, total)
                    yield chunk

        headers = {
            "X-Filename": path.name,
            "Content-Length": str(total),
            "Content-Type": "application/octet-stream",
        }
        return self._request(
            "POST", "/v1/files", params={"purpose": purpose}, content=chunks(), headers=headers
        ).json()

    def file(self, file_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/files/{file_id}").json()

    def files(self, *, page_size: int = 100) -> Iterator[dict[str, Any]]:
        return self._pages("/v1/files", {"limit": page_size})

    def delete_file(self, file_id: str) -> None:
        self._request("DELETE", f"/v1/files/{file_id}")

    # --- jobs --------------------------------------------------------------------------

    def create_job(self, spec: Any, *, idempotency_key: str | None = None) -> dict[str, Any]:
        """Submits a job from a dict or a pydantic spec (anything with ``model_dump``)."""
        body = (
            spec.model_dump(mode="json", exclude_none=True) if hasattr(spec, "model_dump") else spec
        )
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._request("POST", "/v1/jobs", json=body, headers=headers).json()

    def job(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/jobs/{job_id}").json()

    def jobs(self, status: str | None = None, *, page_size: int = 100) -> Iterator[dict[str, Any]]:
        """Every job, newest first (pages fetched as the iteration goes)."""
        return self._pages("/v1/jobs", {"status": status, "limit": page_size})

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._request("POST", f"/v1/jobs/{job_id}/cancel").json()

    def wait(
        self, job_id: str, *, timeout: float | None = None, poll_seconds: float = 1.0
    ) -> dict[str, Any]:
        """The job once it has ended; :class:`JobTimeout` after ``timeout`` seconds."""
        return _wait_for(lambda: self.job(job_id), timeout, poll_seconds)

    def metrics(self, job_id: str) -> list[dict[str, Any]]:
        return self._request("GET", f"/v1/jobs/{job_id}/metrics").json()

    def events(self, job_id: str, *, follow: bool = False, after: int = 0) -> Iterator[dict]:
        """The job's events in order; with ``follow``, live until the job ends.

        Following reconnects after a dropped connection with ``Last-Event-ID``,
        so no event is lost or repeated.
        """
        return self._events(f"/v1/jobs/{job_id}/events", follow, after)

    def _events(self, path: str, follow: bool, after: int) -> Iterator[dict]:
        if not follow:
            yield from self._request("GET", path, params={"after": after}).json()
            return
        last = after
        while True:
            try:
                for event in self._stream_events(path, last):
                    last = event["id"]
                    yield event
                return
            except httpx.TransportError:
                time.sleep(1.0)  # the server restarted or the network dropped: resume

    def _stream_events(self, path: str, last: int) -> Iterator[dict[str, Any]]:
        headers = {"Accept": "text/event-stream", "Last-Event-ID": str(last)}
        with self.http.stream("GET", path, headers=headers, timeout=None) as response:
            if response.status_code >= 400:
                response.read()
                _raise_for_problem(response)
            for line in response.iter_lines():
                if line.startswith("data: "):
                    yield json.loads(line[len("data: ") :])

    def artifacts(self, job_id: str) -> list[dict[str, Any]]:
        return self._request("GET", f"/v1/jobs/{job_id}/artifacts").json()

    def download(
        self, job_id: str, name: str = "student.safetensors", dest: str | Path = "."
    ) -> Path:
        """Downloads an artifact into ``dest`` (a directory or a file path), sha256 verified.

        An interrupted download resumes from its ``.part`` file with a Range request.
        """
        return self._download(f"/v1/jobs/{job_id}/artifacts", name, dest)

    def _download(self, artifacts: str, name: str, dest: str | Path) -> Path:
        listing = self._request("GET", artifacts).json()
        (listed,) = [a for a in listing if a["name"] == name] or [None]
        if listed is None:
            raise NotFound(404, {"detail": f"{artifacts} has no artifact {name!r}"})
        dest = Path(dest)
        target = dest / name if dest.is_dir() else dest
        partial = target.with_name(target.name + ".part")
        have = partial.stat().st_size if partial.exists() else 0
        headers = {"Range": f"bytes={have}-"} if 0 < have < listed["bytes"] else {}
        with self.http.stream("GET", f"{artifacts}/{name}", headers=headers) as response:
            if response.status_code >= 400:
                response.read()
                _raise_for_problem(response)
            mode = "ab" if response.status_code == 206 else "wb"
            with partial.open(mode) as handle:
                for chunk in response.iter_bytes(CHUNK):
                    handle.write(chunk)
        digest = hashlib.sha256()
        with partial.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
        if digest.hexdigest() != listed["sha256"]:
            partial.unlink()
            raise ApiError(0, {"detail": f"{name}: sha256 mismatch; the download was discarded"})
        partial.replace(target)
        return target

    @property
    def sweeps(self) -> Sweeps:
        """The sweeps of API.md: ``client.sweeps.create({...})``, ``.wait(id)``, …"""
        return Sweeps(self)

    # --- catalog -------------------------------------------------------------------------

    def architectures(self, source: str = "zoo", search: str = "") -> Iterator[dict[str, Any]]:
        """Every name a job's architecture may take from ``source`` (zoo, timm or
        torchvision) containing ``search``, following the pages' ``Link`` headers."""
        response = self._request(
            "GET", "/v1/architectures", params={"source": source, "search": search}
        )
        while True:
            yield from response.json()
            following = response.links.get("next", {}).get("url")
            if not following:
                return
            response = self._request("GET", following)

    def datasets(self) -> list[dict[str, Any]]:
        """The built-in datasets (API.md v1); registered ones: :meth:`registered_datasets`."""
        return self._request("GET", "/v1/datasets").json()

    # --- registered datasets (API.md v1.2) ----------------------------------------------

    def register_dataset(
        self, source: str, *, format: str = "auto", name: str | None = None
    ) -> dict[str, Any]:
        """Registers ``source`` (s3://…, file:///… under the server's OTRT_DATA_SOURCES, or
        an uploaded .zip's file_… id); a worker converts it: :meth:`wait_dataset`."""
        body = {"source": source, "format": format} | ({"name": name} if name else {})
        return self._request("POST", "/v1/datasets", json=body).json()

    def push_dataset(
        self,
        directory: str | Path,
        *,
        name: str | None = None,
        progress: Callable[[int, int], None] | None = None,
        part_size: int | None = None,
        parallel: int = 4,
        on_resume: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Uploads a local ImageFolder tree in parts (packed as one uncompressed zip on
        disk) and registers it; returns the dataset (converting). Run again after an
        interruption, it sends only the parts the server lacks."""
        from otrt.push import zipped_tree

        directory = Path(directory)
        with zipped_tree(directory) as archive:
            uploaded = self.upload_in_parts(
                archive,
                part_size=part_size,
                parallel=parallel,
                progress=progress,
                on_resume=on_resume,
            )
        return self.register_dataset(uploaded["id"], name=name or directory.resolve().name)

    def upload_in_parts(
        self,
        path: str | Path,
        *,
        part_size: int | None = None,
        parallel: int = 4,
        progress: Callable[[int, int], None] | None = None,
        resume_dir: Path | None = None,
        on_resume: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """A dataset file through ``/v1/uploads`` (API.md v1.3), ``parallel`` parts at a
        time; returns its ``file_…``. The upload's id is kept under ``resume_dir`` (default
        ``~/.cache/otrt/uploads``), keyed by the file's sha256 and this server, so that a
        second call for the same bytes resumes it (``on_resume(upload)`` is told)."""
        from otrt.push import PartSender, ResumeRecord

        path = Path(path)
        record = ResumeRecord.of(path, str(self.http.base_url), resume_dir)
        upload = self._resumed_upload(record)
        if upload is not None and on_resume:
            on_resume(upload)
        if upload is None:
            body = {"filename": path.name, "size": path.stat().st_size, "sha256": record.sha256}
            upload = self._request("POST", "/v1/uploads", json=body | _given(part_size)).json()
            record.save(upload["id"])
        PartSender(self, path, upload, progress).send(parallel)
        uploaded = self._request("POST", f"/v1/uploads/{upload['id']}/complete").json()
        record.clear()
        return uploaded

    def _resumed_upload(self, record) -> dict[str, Any] | None:
        """The upload ``record`` names, if the server still has it."""
        if (upload_id := record.upload_id()) is None:
            return None
        try:
            return self._request("GET", f"/v1/uploads/{upload_id}").json()
        except NotFound:
            return None

    def dataset(self, dataset_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/datasets/{dataset_id}").json()

    def registered_datasets(self, *, page_size: int = 100) -> Iterator[dict[str, Any]]:
        """Every registered dataset of the caller, newest first."""
        return self._pages("/v1/datasets/registered", {"limit": page_size})

    def wait_dataset(
        self, dataset_id: str, *, timeout: float | None = None, poll_seconds: float = 1.0
    ) -> dict[str, Any]:
        """The dataset once ``ready`` or ``failed``; :class:`JobTimeout` after ``timeout``."""
        return _wait_for(lambda: self.dataset(dataset_id), timeout, poll_seconds, DATASET_ENDED)

    def dataset_events(
        self, dataset_id: str, *, follow: bool = False, after: int = 0
    ) -> Iterator[dict]:
        """The conversion's events; with ``follow``, live until the dataset is ready or failed."""
        return self._events(f"/v1/datasets/{dataset_id}/events", follow, after)

    def delete_dataset(self, dataset_id: str) -> None:
        self._request("DELETE", f"/v1/datasets/{dataset_id}")


class Sweeps:
    """Sweeps (API.md, "Sweeps"): a search over a job's fields whose trials are jobs."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def create(self, sweep: dict[str, Any]) -> dict[str, Any]:
        """Starts a sweep (``base``, ``space``, ``search``, ``trials``, ``parallel``, …)."""
        return self.client._request("POST", "/v1/sweeps", json=sweep).json()

    def get(self, sweep_id: str) -> dict[str, Any]:
        return self.client._request("GET", f"/v1/sweeps/{sweep_id}").json()

    def list(self, *, page_size: int = 100) -> Iterator[dict[str, Any]]:
        """Every sweep, newest first."""
        return self.client._pages("/v1/sweeps", {"limit": page_size})

    def trials(self, sweep_id: str) -> Iterator[dict[str, Any]]:
        """The sweep's jobs (its points at each seed, and its baselines), newest first."""
        return self.client._pages("/v1/jobs", {"sweep": sweep_id, "limit": 100})

    def cancel(self, sweep_id: str) -> dict[str, Any]:
        return self.client._request("POST", f"/v1/sweeps/{sweep_id}/cancel").json()

    def wait(
        self, sweep_id: str, *, timeout: float | None = None, poll_seconds: float = 1.0
    ) -> dict[str, Any]:
        """The sweep once it has ended; :class:`JobTimeout` after ``timeout`` seconds."""
        return _wait_for(lambda: self.get(sweep_id), timeout, poll_seconds)

    def best(self, sweep_id: str) -> dict[str, Any] | None:
        """The best point so far (final once the sweep ended): its job, metric and values."""
        return self.get(sweep_id)["best"]

    def events(self, sweep_id: str, *, follow: bool = False, after: int = 0) -> Iterator[dict]:
        """The sweep's events in order; with ``follow``, live until the sweep ends."""
        return self.client._events(f"/v1/sweeps/{sweep_id}/events", follow, after)

    def artifacts(self, sweep_id: str) -> list[dict[str, Any]]:
        return self.client._request("GET", f"/v1/sweeps/{sweep_id}/artifacts").json()

    def download(
        self, sweep_id: str, name: str = "student.safetensors", dest: str | Path = "."
    ) -> Path:
        """Downloads the best trial's artifact ``name`` (or ``sweep.json``), sha256 verified."""
        return self.client._download(f"/v1/sweeps/{sweep_id}/artifacts", name, dest)


def _wait_for(
    read: Callable[[], dict[str, Any]],
    timeout: float | None,
    poll: float,
    ended: frozenset[str] = TERMINAL,
) -> dict:
    """``read()`` once its status is in ``ended``; :class:`JobTimeout` after ``timeout``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while (item := read())["status"] not in ended:
        if deadline is not None and time.monotonic() >= deadline:
            raise JobTimeout(item)
        time.sleep(poll)
    return item


def _given(part_size: int | None) -> dict[str, int]:
    return {"part_size": part_size} if part_size else {}


def _raise_for_problem(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        problem = response.json()
    except ValueError:
        problem = {"detail": response.text[:500] or response.reason_phrase}
    raise ERRORS.get(response.status_code, ApiError)(response.status_code, problem)
