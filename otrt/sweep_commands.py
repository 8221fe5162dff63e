"""`otrt sweep submit|status|best|cancel`: the sweeps of API.md from the command line.

Like the job commands (``otrt.client_commands``): ``--url``/``--api-key`` or the
environment, ``--json`` for the API's JSON, errors as one line; exit 1 when
the server refused or the sweep did not succeed, 2 for an unreadable file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from otrt.client_commands import Json, Key, Url, connect, emit, upload_local_inputs, whole_ids

SweepId = Annotated[str, typer.Argument(help="sweep_…")]
sweep_app = typer.Typer(
    help="Sweeps: the service tunes a job's fields itself.", no_args_is_help=True
)


@sweep_app.command("submit")
def submit(
    path: Annotated[Path, typer.Argument(help="The sweep (JSON): base, space, search, …")],
    wait: Annotated[bool, typer.Option(help="Follow the sweep's events to its end.")] = False,
    url: Url = None,
    api_key: Key = None,
    as_json: Json = False,
) -> None:
    """Starts a sweep. Local files its base job names are uploaded first."""
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        typer.echo(f"error: cannot read {path}: {error}", err=True)
        raise typer.Exit(2) from None
    with connect(url, api_key) as client:
        upload_local_inputs(client, body.get("base") or {}, path.parent, quiet=as_json)
        sweep = client.sweeps.create(body)
        if wait:
            for event in client.sweeps.events(sweep["id"], follow=True):
                if not as_json:
                    typer.echo(f"{event['type']:<10} {event['message']}")
            sweep = client.sweeps.get(sweep["id"])
    if as_json:
        emit(sweep)
    elif wait:
        _print_sweep(sweep)
    else:
        typer.echo(sweep["id"])
    if wait and sweep["status"] != "succeeded":
        raise typer.Exit(1)


@sweep_app.command("status")
def status(sweep_id: SweepId, url: Url = None, api_key: Key = None, as_json: Json = False) -> None:
    """A sweep: its status, each trial's job and result, the best point so far."""
    with connect(url, api_key) as client:
        sweep = client.sweeps.get(sweep_id)
    emit(sweep) if as_json else _print_sweep(sweep)


@sweep_app.command("best")
def best(sweep_id: SweepId, url: Url = None, api_key: Key = None, as_json: Json = False) -> None:
    """The best point (final once the sweep ended): its job, metric and values."""
    with connect(url, api_key) as client:
        found = client.sweeps.best(sweep_id)
    if as_json:
        emit(found)
    elif found is None:
        typer.echo(f"{sweep_id} has no finished point yet")
        raise typer.Exit(1)
    else:
        values = ", ".join(f"{k}={json.dumps(v)}" for k, v in found["params"].items())
        typer.echo(f"point {found['point']}: {found['metric']:.1%} ({values}); {found['job_id']}")


@sweep_app.command("cancel")
def cancel(sweep_id: SweepId, url: Url = None, api_key: Key = None, as_json: Json = False) -> None:
    """Cancels a sweep: its queued trials at once, its running ones at their next heartbeat."""
    with connect(url, api_key) as client:
        sweep = client.sweeps.cancel(sweep_id)
    emit(sweep) if as_json else typer.echo(f"{sweep['id']} {sweep['status']}")


def _print_sweep(sweep: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    points = sweep["points"]
    typer.echo(
        f"{sweep['id']}  {sweep['status']}  {sweep['search']} search, "
        f"{points['planned']}/{points['total']} points"
    )
    table = Table("job", "role", "point", "seed", "values", "status", sweep["metric"], "test")
    whole_ids(table, [trial["job_id"] or "-" for trial in sweep["trials"]])
    for trial in sweep["trials"]:
        values = ", ".join(f"{k}={json.dumps(v)}" for k, v in trial["params"].items())
        table.add_row(
            trial["job_id"] or "",
            trial["role"],
            "" if trial["point"] is None else str(trial["point"]),
            str(trial["seed"]),
            values[:60],
            trial["status"],
            _percent(trial["metric"]),
            _percent(trial["test_accuracy"]),
        )
    Console(width=160).print(table)
    if sweep["best"]:
        typer.echo(f"best: point {sweep['best']['point']} ({_percent(sweep['best']['metric'])})")
    for kind, gain in sweep["compare"].items():
        if gain["gain"] is not None:
            interval = gain["ci95"]
            where = f" [{interval[0] * 100:+.1f}, {interval[1] * 100:+.1f}]" if interval else ""
            typer.echo(
                f"over {kind}: {gain['gain'] * 100:+.1f} points{where} ({gain['seeds']} seeds)"
            )


def _percent(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"
