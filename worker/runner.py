"""Children of the executor (the trainer, the dataset converter): each started in its own
process group and read as JSON lines.

The same code serves the embedded executor and the Celery worker. Stopping
sends SIGTERM to the whole group (the trainer checkpoints and exits 75), then
SIGKILL after a grace period, so no grandchild (a data-loader worker, say, or
a rank of a multi-process run) outlives the job. A job with ``training.gpus``
above 1 runs under torchrun, one rank per device; rank 0's exit code is read
from the file it writes, since torchrun's own is 0 or 1. Its stdin is a pipe
this process holds open: should this process die unannounced, the trainer
reads EOF and checkpoints and stops too.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import queue
import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from otrt_core import protocol
from otrt_core.launch import torchrun

STOP_GRACE_SECONDS = 30.0
STDERR_TAIL_BYTES = 4000
END_OF_OUTPUT: dict[str, Any] = {"event": "end_of_output"}


@dataclass(frozen=True)
class TrainerInputs:
    """The job's spec file (symbolic: ids, not paths) and the local files its ids stand for."""

    spec: Path
    teacher: Path | None = None
    dataset: Path | None = None
    student_init: Path | None = None
    teacher_cache_dir: Path | None = None  # shared by the trials of one sweep
    dataset_shards: str | None = None  # a registered dataset's snapshot: a dir or s3://…
    pool_shards: str | None = None  # a registered pool's (dataset.unlabeled)

    def arguments(self) -> list[str]:
        files = [
            ("--teacher-file", self.teacher),
            ("--dataset-file", self.dataset),
            ("--student-init-file", self.student_init),
            ("--teacher-cache-dir", self.teacher_cache_dir),
            ("--dataset-shards", self.dataset_shards),
            ("--pool-shards", self.pool_shards),
        ]
        return [str(self.spec)] + [arg for flag, path in files if path for arg in (flag, str(path))]


class ChildProcess:
    """A child in its own process group whose stdout is read as JSON event lines onto a
    queue; its stderr goes to ``log_path``. Its stdin is a pipe held open and never
    written: should this process die, the child reads EOF."""

    exit_code_path: Path | None = None

    def __init__(
        self,
        command: list[str],
        log_path: Path,
        env: dict[str, str],
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.stderr_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as stderr:
            self.process = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=stderr,
                stdin=subprocess.PIPE,
                env={**os.environ, **env},
                start_new_session=True,  # its own process group, signalled as one
                preexec_fn=preexec_fn,
            )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True, name=f"child-{self.pid}").start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue  # a stray print; the protocol is one JSON object per line
            if isinstance(event, dict) and "event" in event:
                self.events.put(event)
        self.events.put(END_OF_OUTPUT)

    def next_event(self, timeout: float) -> dict[str, Any] | None:
        """The next event (``END_OF_OUTPUT`` once stdout closed), or ``None`` after ``timeout``."""
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            return None

    def wait(self) -> int:
        """The trainer's exit code once it has ended: under torchrun, the one rank 0
        wrote (torchrun itself answers 1 when it was signalled too), else torchrun's."""
        code = self.process.wait()
        if self.exit_code_path is not None:
            with contextlib.suppress(OSError, ValueError):
                return int(self.exit_code_path.read_text())
        return code

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> int:
        """SIGTERM to the group, SIGKILL after ``grace`` seconds; returns the exit code."""
        self._signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            return self.process.wait()

    def _signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)

    def stderr_tail(self) -> str:
        try:
            data = self.stderr_path.read_bytes()[-STDERR_TAIL_BYTES:]
        except OSError:
            return ""
        return data.decode(errors="replace").strip()


def niced(nice: int) -> Callable[[], None] | None:
    """What a child runs before its program so that its niceness is ``nice`` above ours
    (inherited by what it starts in turn); ``None`` for 0."""
    return functools.partial(os.nice, nice) if nice else None


class TrainerProcess(ChildProcess):
    """``python -m otrt train SPEC --out DIR [--resume]`` with its events on a queue;
    under ``torchrun --nproc-per-node N`` when ``processes`` is N > 1; ``nice`` added to
    its niceness (and so to its ranks' and data loaders')."""

    def __init__(
        self,
        inputs: TrainerInputs,
        out_dir: Path,
        *,
        resume: bool,
        device: str,
        env: dict[str, str],
        processes: int = 1,
        nice: int = 0,
    ) -> None:
        command = [
            *torchrun(processes),
            "-m",
            "otrt",
            "train",
            *inputs.arguments(),
            "--out",
            str(out_dir),
        ]
        command += ["--device", device, "--stop-on-stdin-eof"] + (["--resume"] if resume else [])
        self.exit_code_path = out_dir / protocol.EXIT_CODE if processes > 1 else None
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / protocol.EXIT_CODE).unlink(missing_ok=True)  # an earlier attempt's
        super().__init__(command, out_dir / "trainer.log", env, preexec_fn=niced(nice))
