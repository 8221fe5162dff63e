"""`otrt datasets …`: register, push, list and show registered datasets (API.md v1.2)."""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Annotated, Any

import typer

from otrt.client_commands import Json, Key, Url, connect, emit, whole_ids

datasets_app = typer.Typer(help="Registered datasets: a folder or bucket converted once.")
DatasetId = Annotated[str, typer.Argument(help="ds_…")]
Wait = Annotated[bool, typer.Option("--wait/--no-wait", help="Follow it until ready.")]


@datasets_app.command("register")
def register(
    source: Annotated[str, typer.Argument(help="s3://bucket/prefix/, file:///dir/ or file_…")],
    format: Annotated[str, typer.Option(help="auto, imagefolder, webdataset, parquet")] = "auto",
    name: Annotated[str | None, typer.Option(help="A name to show.")] = None,
    wait: Wait = True,
    url: Url = None,
    api_key: Key = None,
    as_json: Json = False,
) -> None:
    """Registers a source the server may read; a worker converts it."""
    with connect(url, api_key) as client:
        dataset = client.register_dataset(source, format=format, name=name)
        _finish(client, dataset, wait, as_json)


@datasets_app.command("push")
def push(
    directory: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="A folder.")],
    name: Annotated[str | None, typer.Option(help="A name to show (the folder's).")] = None,
    part_size: Annotated[
        int | None, typer.Option(min=65536, help="Bytes per part (default: the server's).")
    ] = None,
    parallel: Annotated[int, typer.Option(min=1, max=64, help="Parts sent at once.")] = 4,
    wait: Wait = True,
    url: Url = None,
    api_key: Key = None,
    as_json: Json = False,
) -> None:
    """Uploads a local ImageFolder tree in parts and registers it; run again after an
    interruption, it sends only the parts the server lacks."""
    with connect(url, api_key) as client:
        dataset = client.push_dataset(
            directory, name=name, part_size=part_size, parallel=parallel, on_resume=_resuming
        )
        _finish(client, dataset, wait, as_json)


def _resuming(upload: dict[str, Any]) -> None:
    stored, parts = len(upload["stored"]), len(upload["parts"])
    typer.echo(f"resuming {upload['id']}: {stored} of {parts} parts stored", err=True)


def _finish(client, dataset: dict[str, Any], wait: bool, as_json: bool) -> None:
    if wait:
        for event in client.dataset_events(dataset["id"], follow=True):
            if not as_json:
                typer.echo(f"{event['type']:>10}  {event['message']}")
        dataset = client.dataset(dataset["id"])
    if as_json:
        emit(dataset)
    else:
        _show(dataset)
    if dataset["status"] == "failed":
        raise typer.Exit(1)


@datasets_app.command("list")
def list_datasets(
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 20,
    url: Url = None,
    api_key: Key = None,
    as_json: Json = False,
) -> None:
    """Lists registered datasets, newest first (ids in full)."""
    with connect(url, api_key) as client:
        listed = list(islice(client.registered_datasets(), limit))
    if as_json:
        emit(listed)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "name", "status", "images", "classes", "unreadable", "created")
    whole_ids(table, [dataset["id"] for dataset in listed])
    for dataset in listed:
        table.add_row(
            dataset["id"],
            dataset["name"],
            dataset["status"],
            str(_images(dataset) or ""),
            str(len(dataset["classes"] or [])),
            str((dataset["unreadable"] or {}).get("count", "")),
            dataset["created_at"][:19],
        )
    Console().print(table)


@datasets_app.command("show")
def show(dataset_id: DatasetId, url: Url = None, api_key: Key = None, as_json: Json = False):
    """One dataset: status, classes, counts, image sizes, unreadable files."""
    with connect(url, api_key) as client:
        dataset = client.dataset(dataset_id)
    if as_json:
        emit(dataset)
    else:
        _show(dataset)


def _images(dataset: dict[str, Any]) -> int | None:
    counts = dataset.get("counts")
    return sum(sum(c.values()) for c in counts.values()) if counts else None


def _show(dataset: dict[str, Any]) -> None:
    typer.echo(f"{dataset['id']}  {dataset['name']}  {dataset['status']}")
    typer.echo(f"source    {dataset['source']} ({dataset['format']})")
    if dataset.get("error"):
        typer.echo(f"error     {dataset['error']['code']}: {dataset['error']['message']}")
    if dataset.get("counts"):
        for split, per_class in dataset["counts"].items():
            typer.echo(f"{split:<9} {sum(per_class.values())} images in {len(per_class)} classes")
    if dataset.get("images"):
        images = dataset["images"]
        typer.echo(
            f"images    {images['min']} to {images['max']} (median {images['median']}), "
            f"modes {', '.join(images['modes'])}"
        )
    unreadable = dataset.get("unreadable") or {}
    if unreadable.get("count"):
        typer.echo(f"unreadable {unreadable['count']}:")
        for entry in unreadable["files"]:
            typer.echo(f"  {entry['name']}: {entry['reason']}")
