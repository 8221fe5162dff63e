"""The client half of the `otrt` command: submit, jobs, status, events, cancel, download, upload.

Each talks to a server through ``otrt.Client``: ``--url``/``--api-key``, else
``OTRT_URL``/``OTRT_API_KEY``, else the config file (``otrt_core.settings``).
``--json`` prints the API's JSON instead of tables. Errors are one line on
stderr; exit codes: 0 done, 1 the server refused or the job did not succeed,
2 a bad local input (unreadable spec).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

Url = Annotated[str | None, typer.Option("--url", help="Server URL (OTRT_URL).")]
Key = Annotated[str | None, typer.Option("--api-key", help="API key (OTRT_API_KEY).")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]
JobId = Annotated[str, typer.Argument(help="job_…")]


@contextmanager
def connect(url: str | None, api_key: str | None) -> Iterator[Any]:
    """A client, with every failure turned into a one-line error and exit code 1."""
    import httpx

    from otrt.client import ApiError, Client, JobTimeout
    from otrt_core.settings import Settings

    settings = Settings()
    base = url or settings.url
    try:
        with Client(base, api_key or settings.api_key) as client:
            yield client
    except ApiError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    except httpx.TransportError as error:
        typer.echo(f"error: cannot reach {base} ({error}); is `otrt serve` running?", err=True)
        raise typer.Exit(1) from None
    except JobTimeout as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None


def emit(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2))


def register(app: typer.Typer) -> None:
    app.command()(submit)
    app.command()(jobs)
    app.command()(status)
    app.command()(events)
    app.command()(cancel)
    app.command()(download)
    app.command()(upload)


def submit(
    spec: Annotated[Path, typer.Argument(help="Job spec (JSON), as API.md's body.")],
    wait: Annotated[
        bool, typer.Option(help="Follow the job to its end with a progress bar.")
    ] = False,
    idempotency_key: Annotated[str | None, typer.Option(help="Idempotency-Key header.")] = None,
    url: Url = None,
    api_key: Key = None,
    as_json: Json = False,
) -> None:
    """Submits a job. Local files named as teacher checkpoint or dataset are uploaded first."""
    try:
        body = json.loads(spec.read_text())
    except (OSError, ValueError) as error:
        typer.echo(f"error: cannot read {spec}: {error}", err=True)
        raise typer.Exit(2) from None
    with connect(url, api_key) as client:
        upload_local_inputs(client, body, spec.parent, quiet=as_json)
        job = client.create_job(body, idempotency_key=idempotency_key)
        if not wait:
            emit(job) if as_json else typer.echo(job["id"])
            return
        if not as_json:
            typer.echo(f"{job['id']} queued")
        job = _follow(client, job, quiet=as_json)
    emit(job) if as_json else _print_outcome(job)
    if job["status"] != "succeeded":
        raise typer.Exit(1)


def upload_local_inputs(client: Any, body: dict, base: Path, quiet: bool) -> None:
    """Replaces existing local paths in the spec by the ids of their uploads."""
    slots = [
        (body.get("teacher") or {}, "checkpoint", "teacher"),
        (body.get("dataset") or {}, "name", "dataset"),
    ]
    for section, key, purpose in slots:
        value = section.get(key)
        if not isinstance(value, str) or value.startswith(("file_", "job_")):
            continue
        path = Path(value) if Path(value).is_absolute() else base / value
        if path.is_file():
            uploaded = client.upload(path, purpose)
            section[key] = uploaded["id"]
            if not quiet:
                typer.echo(f"uploaded {path.name} as {uploaded['id']}")


def _follow(client: Any, job: dict, quiet: bool) -> dict:
    """Follows the job's events with a progress bar; returns the ended job."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=quiet, transient=True) as bar:
        task = bar.add_task(job["status"], total=None)
        for event in client.events(job["id"], follow=True):
            data = event["data"]
            if data.get("steps"):
                bar.update(task, total=data["steps"], completed=data.get("step", 0))
            description = f"{event['type']}: {event['message']}"[:60]
            bar.update(task, description=description)
    return client.job(job["id"])


def _print_outcome(job: dict) -> None:
    accuracy = (job.get("metrics") or {}).get("test_accuracy")
    line = f"{job['id']} {job['status']}"
    if accuracy is not None:
        line += f": test accuracy {accuracy:.4f}"
    if job.get("error"):
        line += f": {job['error']['code']}: {job['error']['message']}"
    typer.echo(line)


def jobs(
    status_filter: Annotated[str | None, typer.Option("--status", help="Only this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 20,
    url: Url = None,
    api_key: Key = None,
    as_json: Json = False,
) -> None:
    """Lists jobs, newest first."""
    from itertools import islice

    with connect(url, api_key) as client:
        listed = list(islice(client.jobs(status=status_filter), limit))
    if as_json:
        emit(listed)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "status", "mode", "student", "progress", "eta", "created")
    whole_ids(table, [job["id"] for job in listed])
    for job in listed:
        eta = job.get("eta_seconds")
        table.add_row(
            job["id"],
            job["status"],
            job["spec"]["mode"],
            job["spec"]["student"]["architecture"],
            f"{100 * job['progress']['fraction']:.0f}%",
            f"{eta:.0f}s" if eta else "",
            job["created_at"][:19],
        )
    Console().print(table)


def whole_ids(table, ids: list[str]) -> None:
    """The table's first column never cuts an id (what a user copies): on a narrow
    terminal the other columns wrap instead."""
    table.columns[0].no_wrap = True
    table.columns[0].min_width = max(map(len, ids), default=2)


def status(
    job_id: JobId,
    url: Url = None,
    api_key: Key = None,
    as_json: Json = False,
) -> None:
    """One job: status, progress, metrics, error."""
    with connect(url, api_key) as client:
        job = client.job(job_id)
    if as_json:
        emit(job)
        return
    progress = job["progress"]
    typer.echo(f"{job['id']}  {job['status']}  attempt {job['attempt']}")
    typer.echo(
        f"progress  epoch {progress['epoch']}/{progress['epochs'] or '?'}, "
        f"{100 * progress['fraction']:.0f}%"
        + (f", eta {job['eta_seconds']:.0f}s" if job.get("eta_seconds") else "")
    )
    metrics = {k: v for k, v in job["metrics"].items() if v is not None}
    typer.echo("metrics   " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    if job.get("error"):
        typer.echo(f"error     {job['error']['code']}: {job['error']['message']}")


def events(
    job_id: JobId,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Live, until the job ends.")
    ] = False,
    url: Url = None,
    api_key: Key = None,
    as_json: Json = False,
) -> None:
    """The job's events (with --follow, live over SSE)."""
    with connect(url, api_key) as client:
        for event in client.events(job_id, follow=follow):
            if as_json:
                typer.echo(json.dumps(event))
            else:
                typer.echo(
                    f"{event['id']:>5}  {event['at'][:19]}  {event['type']:<10} {event['message']}"
                )


def cancel(
    job_id: JobId,
    url: Url = None,
    api_key: Key = None,
    as_json: Json = False,
) -> None:
    """Cancels a job (queued: at once; running: the trainer checkpoints and stops)."""
    with connect(url, api_key) as client:
        job = client.cancel(job_id)
    emit(job) if as_json else typer.echo(f"{job['id']} {job['status']}")


def download(
    job_id: JobId,
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write into.")] = Path("."),
    name: Annotated[str, typer.Option(help="Artifact name.")] = "student.safetensors",
    url: Url = None,
    api_key: Key = None,
    as_json: Json = False,
) -> None:
    """Downloads an artifact (default: the student's weights), sha256 verified."""
    out.mkdir(parents=True, exist_ok=True)
    with connect(url, api_key) as client:
        path = client.download(job_id, name, out)
    emit({"path": str(path)}) if as_json else typer.echo(str(path))


def upload(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="The file.")],
    purpose: Annotated[str, typer.Option(help="teacher (or model) or dataset.")],
    url: Url = None,
    api_key: Key = None,
    as_json: Json = False,
) -> None:
    """Uploads a teacher checkpoint or a dataset; prints its file id."""
    with connect(url, api_key) as client:
        record = client.upload(path, purpose)
    emit(record) if as_json else typer.echo(record["id"])
