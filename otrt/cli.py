"""The `otrt` command: the composition root, importing heavy parts inside each command."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

import otrt

app = typer.Typer(help="otrt: representation transfer by optimal transport.", no_args_is_help=True)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(otrt.__version__)
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """otrt: representation transfer by optimal transport."""


@app.command()
def demo(
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs of the student.")] = 60,
    labels_per_class: Annotated[int, typer.Option(min=1, help="Labeled examples per class.")] = 10,
    weight: Annotated[float, typer.Option(min=0.0, help="lambda, the OT term's weight.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Distil a small MLP from a larger one on scikit-learn's digits, with and without OT."""
    from otrt.demo import run_demo
    from otrt_core.settings import Settings

    run_demo(
        epochs=epochs,
        labels_per_class=labels_per_class,
        weight=weight,
        seed=seed,
        torch_threads=Settings().torch_threads,
    )


@app.command()
def train(
    spec: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Job spec (JSON).")],
    out: Annotated[Path, typer.Option("--out", help="Directory for checkpoints and outputs.")],
    resume: Annotated[bool, typer.Option(help="Continue from the checkpoint in --out.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    datasets_root: Annotated[
        Path | None, typer.Option(help="Where installed datasets are looked up first.")
    ] = None,
    stop_on_stdin_eof: Annotated[
        bool, typer.Option(help="Checkpoint and stop when stdin closes (as on SIGTERM).")
    ] = False,
    teacher_file: Annotated[
        Path | None,
        typer.Option(help="The teacher's weights, whatever teacher.checkpoint names (an id)."),
    ] = None,
    dataset_file: Annotated[
        Path | None,
        typer.Option(help="The dataset's .npz or .zip, whatever dataset.name names (an id)."),
    ] = None,
    student_init_file: Annotated[
        Path | None,
        typer.Option(help="The model the student starts from, whatever student.init names."),
    ] = None,
    teacher_cache_dir: Annotated[
        Path | None,
        typer.Option(
            help="Teacher caches shared with other runs of the same teacher and data: read "
            "from it when this run's is there, else written there (a sweep's trials)."
        ),
    ] = None,
    dataset_shards: Annotated[
        str | None,
        typer.Option(
            help="A registered dataset's snapshot (a directory, or s3://bucket/prefix/), "
            "whatever dataset.name names (a ds_… id)."
        ),
    ] = None,
    pool_shards: Annotated[
        str | None,
        typer.Option(
            help="A registered pool's snapshot (a directory, or s3://bucket/prefix/), "
            "whatever dataset.unlabeled names (a ds_… id)."
        ),
    ] = None,
) -> None:
    """Train one student from a job spec, without the service."""
    from otrt.train_command import (
        DataOptions,
        InputFiles,
        rank_exit_code,
        relaunch_as_ranks,
        requested_ranks,
        run_train,
    )
    from otrt_core.launch import under_torchrun
    from otrt_core.settings import Settings
    from otrt_core.train.distributed import join, leave

    if not under_torchrun() and (ranks := requested_ranks(spec)) > 1:  # training.gpus
        out.mkdir(parents=True, exist_ok=True)
        raise typer.Exit(relaunch_as_ranks(ranks, sys.argv[1:], out))

    settings = Settings()
    group, device = join(device)  # one rank of several under torchrun (training.gpus)
    try:
        code = run_train(
            spec,
            out,
            resume,
            device,
            datasets_root or settings.datasets_root,
            settings.torch_threads,
            stop_on_stdin_eof,
            InputFiles(
                teacher=teacher_file,
                dataset=dataset_file,
                student_init=student_init_file,
                teacher_cache_dir=teacher_cache_dir,
                dataset_shards=dataset_shards,
                pool_shards=pool_shards,
            ),
            group,
            DataOptions(
                loader_workers=settings.resolved_loader_workers,
                in_memory_bytes=settings.max_decoded_bytes,
                shard_cache_dir=settings.data_dir / "shard-cache",
                shard_cache_bytes=settings.shard_cache_bytes,
                teacher_cache_bytes=settings.teacher_cache_bytes,
                s3_endpoint_url=settings.s3_endpoint_url,
                checkpoint_seconds=settings.checkpoint_seconds,
            ),
        )
    finally:
        leave(group)
    raise typer.Exit(rank_exit_code(group, code, out))


@contextmanager
def _refused_start() -> Iterator[None]:
    """A setting that cannot work (auth off on a public address, a bucket that does not
    exist, refused credentials) ends the command with its reason, exit 2."""
    from otrt.wiring import AuthRefused
    from otrt_core.jobs.storage import StorageUnavailable

    try:
        yield
    except (AuthRefused, StorageUnavailable) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    data_dir: Annotated[
        Path | None, typer.Option(help="Uploads, artifacts and the SQLite file (OTRT_DATA_DIR).")
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Jobs run at once.")] = 1,
) -> None:
    """The whole service in one process: API, SQLite, and an in-process executor."""
    import uvicorn

    from otrt.wiring import auth_enabled, build_embedded
    from otrt_core.settings import Settings

    settings = Settings(**({"data_dir": data_dir} if data_dir else {}))
    with _refused_start():
        auth = auth_enabled(settings, host, embedded=True)
        embedded = build_embedded(settings, concurrency=concurrency, auth=auth)
    url = f"http://{host}:{port}"
    typer.echo(f"otrt {otrt.__version__} serving {url}")
    typer.echo(f"  API docs:  {url}/docs")
    typer.echo(f"  data dir:  {settings.data_dir.resolve()}")
    typer.echo(f"  database:  {settings.resolved_database_url.split('@')[-1]}")
    typer.echo(
        "  auth:      on (create a key: otrt keys create --name NAME)"
        if auth
        else "  auth:      OFF (loopback only; set OTRT_AUTH=on to require API keys)"
    )
    typer.echo(f"  executor:  embedded, {concurrency} job(s) at a time")
    embedded.executor.start()
    try:
        uvicorn.run(embedded.app, host=host, port=port, log_level="warning")
    finally:
        embedded.executor.shutdown()


@app.command()
def api(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
) -> None:
    """The API alone (production): jobs go to Celery workers through OTRT_BROKER_URL."""
    import uvicorn

    from otrt.wiring import auth_enabled, build_api
    from otrt_core.settings import Settings

    settings = Settings()
    if not settings.broker_url:
        typer.echo("error: `otrt api` needs OTRT_BROKER_URL (or use `otrt serve`)", err=True)
        raise typer.Exit(2)
    with _refused_start():
        auth = auth_enabled(settings, host, embedded=False)
        api_app = build_api(settings, auth=auth)
    typer.echo(
        f"otrt {otrt.__version__} API on http://{host}:{port} (auth {'on' if auth else 'OFF'})"
    )
    uvicorn.run(api_app, host=host, port=port, log_level="warning")


@app.command()
def worker(
    hostname: Annotated[
        str | None, typer.Option(help="Celery node name (default: otrt@<host>-<pid>).")
    ] = None,
) -> None:
    """A Celery worker (production): one job at a time; run one per GPU.

    Pin its GPU with CUDA_VISIBLE_DEVICES; stop it with SIGTERM (the running job
    checkpoints and goes back to the queue).
    """
    import os
    import socket

    from otrt.wiring import build_worker
    from otrt_core.settings import Settings

    settings = Settings()
    if not settings.broker_url:
        typer.echo("error: `otrt worker` needs OTRT_BROKER_URL", err=True)
        raise typer.Exit(2)
    with _refused_start():
        celery = build_worker(settings)

    name = hostname or f"otrt@{socket.gethostname()}-{os.getpid()}"
    celery.worker_main(
        ["worker", "--loglevel=INFO", f"--hostname={name}", "--without-gossip", "--without-mingle"]
    )


@app.command()
def migrate() -> None:
    """Upgrades the database (OTRT_DATABASE_URL, or the embedded SQLite) to the newest schema."""
    from otrt_core.jobs.db import make_engine
    from otrt_core.jobs.db import migrate as upgrade
    from otrt_core.settings import Settings

    settings = Settings()
    upgrade(make_engine(settings.resolved_database_url))
    typer.echo("database is at the newest migration")


@app.command("catalog")
def catalog_command(
    write: Annotated[
        bool, typer.Option(help="Rewrite otrt_core/catalog.json from the live registries.")
    ] = False,
) -> None:
    """Print the catalog of architectures and datasets as built from the registries."""
    from otrt.catalog_command import live_catalog
    from otrt_core.catalog import CATALOG_FILE

    _print_or_write(live_catalog().to_json() + "\n", CATALOG_FILE if write else None)


@app.command("openapi")
def openapi_command(
    write: Annotated[bool, typer.Option(help="Rewrite docs/openapi.json.")] = False,
) -> None:
    """Print the HTTP contract (OpenAPI 3.1) that the API serves at /openapi.json."""
    import json
    import tempfile

    from otrt.wiring import OPENAPI_FILE, build_embedded
    from otrt_core.settings import Settings

    with tempfile.TemporaryDirectory() as data_dir:
        document = build_embedded(Settings(data_dir=Path(data_dir))).app.openapi()
    text = json.dumps(document, indent=1, sort_keys=True) + "\n"
    _print_or_write(text, OPENAPI_FILE if write else None)


def _print_or_write(text: str, path: Path | None) -> None:
    """A generated file's text: to stdout, or into ``path`` (saying so)."""
    if path is None:
        typer.echo(text, nl=False)
        return
    path.write_text(text)
    typer.echo(f"wrote {path}")


keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def _keys():
    """The key store of the configured database, migrated."""
    from otrt_core.jobs.db import make_engine, make_sessions
    from otrt_core.jobs.db import migrate as upgrade
    from otrt_core.jobs.keys import KeyStore
    from otrt_core.settings import Settings

    engine = make_engine(Settings().resolved_database_url)
    upgrade(engine)
    return KeyStore(make_sessions(engine))


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="A label for the key; also its owner by default.")],
    owner: Annotated[
        str | None, typer.Option(help="Share the objects of this owner (default: the name).")
    ] = None,
    admin: Annotated[
        bool, typer.Option(help="May read /metrics, which counts every owner's jobs.")
    ] = False,
) -> None:
    """Prints a new API key once; only its hash is stored."""
    record, plain = _keys().create(name, owner, admin=admin)
    typer.echo(plain)
    typer.echo(f"key {record.id} for owner {record.owner!r}: shown once, keep it.", err=True)


@keys_app.command("list")
def keys_list(
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object per key.")] = False,
) -> None:
    """Every key: id, owner, name, scope, quotas, and whether it is revoked."""
    import json

    for key in _keys().list():
        row = {
            "id": key.id,
            "owner": key.owner,
            "name": key.name,
            "admin": key.admin,
            "max_running": key.max_running,
            "max_queued": key.max_queued,
            "rate_limit": key.rate_limit,
            "created_at": key.created_at.isoformat(),
            "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
        }
        if json_output:
            typer.echo(json.dumps(row))
            continue
        state = "revoked" if key.revoked_at else ("admin" if key.admin else "active")
        quota = " ".join(
            f"{name}={row[name]}"
            for name in ("max_running", "max_queued", "rate_limit")
            if row[name] is not None
        )
        typer.echo(f"{key.id}  {key.owner:<20} {key.name:<20} {state:<8} {quota}".rstrip())


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id (key_…).")]) -> None:
    """Revokes a key: every request with it is refused (401) from now on."""
    from otrt_core.jobs.keys import KeyNotFound

    try:
        _keys().revoke(key_id)
    except KeyNotFound:
        typer.echo(f"error: no key {key_id}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"key {key_id} revoked")


@keys_app.command("set-quota")
def keys_set_quota(
    key_id: Annotated[str, typer.Argument(help="The key's id (key_…).")],
    max_running: Annotated[
        int | None, typer.Option(min=0, help="Jobs running at once (0: the default).")
    ] = None,
    max_queued: Annotated[
        int | None, typer.Option(min=0, help="Jobs waiting at once (0: the default).")
    ] = None,
    rate_limit: Annotated[
        float | None, typer.Option(min=0, help="Requests per second (0: the default).")
    ] = None,
) -> None:
    """Sets a key's quotas; options left out keep their value, 0 returns to the default."""
    from otrt_core.jobs.keys import KeyNotFound

    given = {"max_running": max_running, "max_queued": max_queued, "rate_limit": rate_limit}
    changes = {name: value or None for name, value in given.items() if value is not None}
    if not changes:
        typer.echo(
            "error: give at least one of --max-running, --max-queued, --rate-limit", err=True
        )
        raise typer.Exit(2)
    try:
        key = _keys().set_quota(key_id, **changes)
    except KeyNotFound:
        typer.echo(f"error: no key {key_id}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"key {key.id}: max_running={key.max_running} max_queued={key.max_queued} "
        f"rate_limit={key.rate_limit} (None: the server's default)"
    )


# The client commands (submit, jobs, status, events, cancel, download, upload; sweep …).
from otrt import client_commands  # noqa: E402
from otrt.dataset_commands import datasets_app  # noqa: E402
from otrt.sweep_commands import sweep_app  # noqa: E402

client_commands.register(app)
app.add_typer(sweep_app, name="sweep")
app.add_typer(datasets_app, name="datasets")
