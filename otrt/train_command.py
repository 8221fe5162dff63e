"""`otrt train SPEC --out DIR`: one training run, no service.

Progress goes to stdout as JSON lines (docs/training.md), or as a progress bar
when stdout is a terminal. SIGTERM saves a checkpoint and exits with
EXIT_STOPPED; `--resume` continues from it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from otrt_core import protocol

if TYPE_CHECKING:
    from otrt_core.train.distributed import Group


@dataclass(frozen=True)
class InputFiles:
    """Local files that stand for the spec's symbolic inputs (the service's ids).

    The spec keeps ``file_…`` / ``job_…`` ids; whoever runs the trainer says
    where their bytes are. Unset: the spec's own value is a path.
    """

    teacher: Path | None = None
    dataset: Path | None = None
    student_init: Path | None = None
    teacher_cache_dir: Path | None = None  # teacher caches shared between runs
    dataset_shards: str | None = None  # a registered dataset's snapshot: a dir or s3://…
    pool_shards: str | None = None  # a registered pool's (dataset.unlabeled): a dir or s3://…


@dataclass(frozen=True)
class DataOptions:
    """How the trainer reads data (Settings): loader workers, limits, checkpoints."""

    loader_workers: int = 2
    in_memory_bytes: int = 256 << 20
    shard_cache_dir: Path | None = None  # the host's shared cache; default: the job's own
    shard_cache_bytes: int = 4 << 30
    teacher_cache_bytes: int = 8 << 30  # memory-mapped teacher outputs, per job
    s3_endpoint_url: str | None = None
    checkpoint_seconds: float = 600.0


def run_train(
    spec_path: Path,
    out_dir: Path,
    resume: bool,
    device: str,
    datasets_root: Path | None,
    torch_threads: int | None,
    stop_on_stdin_eof: bool = False,
    inputs: InputFiles | None = None,
    group: Group | None = None,
    data: DataOptions | None = None,
) -> int:
    """Runs the spec; returns the process exit code.

    ``stop_on_stdin_eof``: stop as on SIGTERM when stdin closes. A parent that
    holds the pipe open without writing thus stops its trainer even when it
    dies without a chance to signal (the service runs trainers this way).
    ``group``: this rank's place when torchrun runs several (rank 0 alone prints).
    """
    import torch

    from otrt_core import train as engine
    from otrt_core.data.shard_cache import ShardCache
    from otrt_core.errors import UserError
    from otrt_core.spec import SpecError, resolve_spec
    from otrt_core.train.distributed import Group

    group = group or Group()

    if torch_threads:
        torch.set_num_threads(torch_threads)
    try:
        spec = resolve_spec(json.loads(spec_path.read_text()))
    except (OSError, json.JSONDecodeError) as error:
        typer.echo(f"error: cannot read {spec_path}: {error}", err=True)
        return protocol.EXIT_INVALID
    except SpecError as error:
        for problem in error.problems:
            typer.echo(f"error: {'.'.join(map(str, problem.loc))}: {problem.msg}", err=True)
        return protocol.EXIT_INVALID

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if stop_on_stdin_eof:
        threading.Thread(target=_set_at_eof, args=(sys.stdin.fileno(), stop), daemon=True).start()
    inputs = inputs or InputFiles()
    data = data or DataOptions()

    shard_cache = ShardCache(
        data.shard_cache_dir or out_dir / "shard-cache", data.shard_cache_bytes
    )

    def snapshot(location: str | None) -> engine.StreamOptions | None:
        if location is None:
            return None
        return engine.StreamOptions(
            location=location,
            cache=shard_cache,
            s3_endpoint_url=data.s3_endpoint_url,
            workers=data.loader_workers,
            in_memory_bytes=data.in_memory_bytes,
        )

    options = engine.RunOptions(
        out_dir=out_dir,
        teacher_path=inputs.teacher
        or (_beside_spec(spec.teacher.checkpoint, spec_path) if spec.teacher else None),
        dataset_path=inputs.dataset
        or (
            _beside_spec(spec.dataset.name, spec_path)
            if spec.dataset.name.endswith((".npz", ".zip"))
            else None
        ),
        student_init_path=inputs.student_init
        or (_beside_spec(spec.student.init, spec_path) if spec.student.init else None),
        datasets_root=datasets_root,
        shared_cache_dir=inputs.teacher_cache_dir,
        device=device,
        resume=resume,
        should_stop=stop.is_set,
        group=group,
        stream=snapshot(inputs.dataset_shards),
        pool=snapshot(inputs.pool_shards),
        checkpoint_seconds=data.checkpoint_seconds,
        limits=engine.Limits(teacher_cache_disk=data.teacher_cache_bytes),
    )
    with Reporter(sys.stdout.isatty(), quiet=not group.leader) as emit:
        try:
            engine.train(spec, options, emit)
        except engine.TrainingStopped as stopped:
            if stopped.reason == "signal":
                return protocol.EXIT_STOPPED
            return protocol.EXIT_MAX_RUNTIME
        except engine.Diverged as error:
            emit(protocol.Error(code=protocol.DIVERGED, message=str(error)))
            typer.echo(f"error: {error}", err=True)
            return protocol.EXIT_DIVERGED
        except UserError as error:
            emit(protocol.Error(code=protocol.INVALID_INPUT, message=str(error)))
            typer.echo(f"error: {error}", err=True)
            return protocol.EXIT_INVALID
    return protocol.EXIT_OK


def requested_ranks(spec_path: Path) -> int:
    """``training.gpus`` as the spec file asks (1 when it cannot be read: the run then
    reports what is wrong with it)."""
    try:
        gpus = json.loads(spec_path.read_text()).get("training", {}).get("gpus", 1)
    except (OSError, ValueError, AttributeError):
        return 1
    return gpus if isinstance(gpus, int) and gpus > 1 else 1


def relaunch_as_ranks(ranks: int, arguments: list[str], out_dir: Path) -> int:
    """``otrt train arguments`` again as ``ranks`` processes under torchrun, as the
    service's workers run it; returns the exit code rank 0 wrote (torchrun's own is 0
    or 1)."""
    import subprocess

    from otrt_core.launch import torchrun

    (out_dir / protocol.EXIT_CODE).unlink(missing_ok=True)
    done = subprocess.run([*torchrun(ranks), "-m", "otrt", *arguments])
    try:
        return int((out_dir / protocol.EXIT_CODE).read_text())
    except (OSError, ValueError):
        return done.returncode or 1


def rank_exit_code(group: Group, code: int, out_dir: Path) -> int:
    """What this process exits with. One rank of several: rank 0 writes ``code`` to
    ``out_dir/exit_code`` and every rank that ended as planned (stopped, failed on
    the input) exits 0, since torchrun turns any other code into 1."""
    if group.world == 1:
        return code
    if group.leader:
        (out_dir / protocol.EXIT_CODE).write_text(f"{code}\n")
    return protocol.EXIT_OK


def _set_at_eof(fd: int, event: threading.Event) -> None:
    # os.read, not sys.stdin: a daemon thread blocked in a buffered read would
    # hold its lock at interpreter shutdown and abort the process.
    while os.read(fd, 4096):
        pass
    event.set()


def _beside_spec(name: str, spec_path: Path) -> Path:
    """A relative path is read beside the spec file, else from the working directory."""
    path = Path(name)
    beside_spec = spec_path.parent / path
    return beside_spec if not path.is_absolute() and beside_spec.exists() else path


class Reporter:
    """JSON lines on stdout, or a rich progress bar on a terminal."""

    def __init__(self, interactive: bool, quiet: bool = False) -> None:
        self.interactive, self.quiet = interactive, quiet

    def __enter__(self):
        if self.quiet:  # a rank other than 0: rank 0 speaks for all
            return lambda event: None
        if not self.interactive:
            return lambda event: print(json.dumps(protocol.event_line(event)), flush=True)
        from rich.progress import Progress

        self.bar = Progress()
        self.bar.start()
        self.task = self.bar.add_task("training", total=None)
        return self._show

    def _show(self, event: protocol.Event) -> None:
        if isinstance(event, protocol.Start | protocol.Step | protocol.Epoch):
            self.bar.update(self.task, total=event.steps, completed=event.step)
        if isinstance(event, protocol.Epoch):
            self.bar.console.print(
                f"epoch {event.epoch}: train loss {event.train_loss:.4f}, "
                f"val accuracy {event.val_accuracy:.2%}"
            )
        elif isinstance(event, protocol.Done | protocol.Stopped | protocol.Error):
            self.bar.console.print(json.dumps(protocol.event_line(event)))

    def __exit__(self, *exc_info) -> None:
        if self.interactive and not self.quiet:
            self.bar.stop()
