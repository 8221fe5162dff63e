"""The contract between the trainer and the service, importable without torch.

One copy of each name both sides use: the trainer's exit codes, the files it
writes, the OT option names and defaults the spec offers, and the error codes
a failed job can carry. The trainer (``otrt train``) writes these, the
executors read them, the spec and the API quote them; none of them imports
the other's heavy half.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

# --- exit codes of `otrt train` ---------------------------------------------------------
EXIT_OK = 0
EXIT_INVALID = 2  # the spec or its inputs are wrong: retrying will not help
EXIT_DIVERGED = 3  # the loss turned non-finite: the job failed, retrying will not help
EXIT_STOPPED = 75  # stopped on request (SIGTERM) with a checkpoint: resume it
EXIT_MAX_RUNTIME = 124  # training.max_runtime_s ran out (a checkpoint is saved)

# --- what the trainer writes in its output directory ------------------------------------
CHECKPOINT = "checkpoint.pt"
# Rank 0's exit code, where torchrun runs the trainer (torchrun reports only 0 or 1).
EXIT_CODE = "exit_code"
STUDENT_WEIGHTS = "student.safetensors"  # the selected student; a teacher job lends it
STUDENT_ONNX = "student.onnx"
METRICS = "metrics.json"
RESOLVED_SPEC = "spec.json"
PLAN = "plan.npy"  # the latest transport plan of an OT run
STUDENT_INT8 = "student.int8.onnx"
REPORT = "report.json"
REPORT_HTML = "report.html"
ARTIFACTS = (
    STUDENT_WEIGHTS,
    METRICS,
    RESOLVED_SPEC,
    STUDENT_ONNX,
    PLAN,
    STUDENT_INT8,
    REPORT,
    REPORT_HTML,
)

# --- the OT regularizer's options (METHOD.md) -------------------------------------------
SOLVERS = ("auto", "exact", "assignment", "sinkhorn")
SPATIAL_MODES = ("pool", "flatten")
NORMALIZATIONS = ("none", "center", "standardize", "unit", "rms")
# Real costs sit in a narrow band far above zero: even relative to the spread,
# epsilon = 0.05 overestimates Omega by 13-30% at widths 64-2048, while 0.002
# with 50 epsilon-scaled iterations stays within 1% of exact (docs/ot.md).
DEFAULT_EPSILON = 0.002
DEFAULT_MAX_ITER = 50

# --- bounds every side enforces -------------------------------------------------------
MAX_CLASSES = 100_000  # labels are class indices below this, in specs and in datasets

# --- error codes of a failed job (``job.error.code``) -----------------------------------
INVALID_INPUT = "invalid_input"  # the spec or an input cannot be used
DIVERGED = "diverged"  # the training loss turned non-finite
MAX_RUNTIME = "max_runtime"  # training.max_runtime_s ran out
TIME_LIMIT = "time_limit"  # the attempt outlived max_runtime_s and its grace
INPUT_MISSING = "input_missing"  # an input vanished between submission and start
WORKER_LOST = "worker_lost"  # the executor died on every attempt
INTERNAL_ERROR = "internal_error"  # a fault of otrt's, not of the job: see the server log
# ... and of a cancelled one: its sweep's early stopping (ASHA) ended it.
PRUNED = "pruned"


# --- the trainer's progress events: one JSON object per line on stdout ------------------
# Each line is ``{"event": KIND, **fields}``. The trainer builds these, the
# executor parses them back with :func:`parse_event`; fields a reader does not
# know are ignored, so either side can be newer.


@dataclass(frozen=True)
class Start:
    """Training (re)started; ``history`` holds the epochs done so far, for a parent that
    missed some ``epoch`` lines (it died while they were printed)."""

    kind: ClassVar[str] = "start"
    epoch: int
    epochs: int
    step: int
    steps: int
    device: str
    teacher_cache: str  # "off", "memory", "disk" or "shared" (memory, read from a shared file)
    resumed: bool
    history: list[dict[str, Any]] = field(default_factory=list)
    world_size: int = 1  # processes training together (training.gpus)
    # "memory" (tensors, on the device when they fit) or "streamed" (a registered
    # dataset's shards, decoded by loader workers).
    data_path: str = "memory"
    # The numbers used for the spec's "auto" weights, by dotted path ("regularizer.weight").
    weights: dict[str, float] = field(default_factory=dict)
    unlabeled_inputs: int = 0  # the pool the unlabeled batches are drawn from
    teacher_cache_off: str | None = None  # why the teacher cache is off, when it is


@dataclass(frozen=True)
class Step:
    """Progress within an epoch (a few lines an epoch)."""

    kind: ClassVar[str] = "step"
    epoch: int
    step: int
    steps: int
    train_loss: float
    ot_distance: float | None
    lr: float
    seconds: float


@dataclass(frozen=True)
class Epoch:
    """One finished epoch: the record kept in the job's history."""

    kind: ClassVar[str] = "epoch"
    epoch: int
    step: int
    steps: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    ot_distance: float | None
    lr: float
    seconds: float
    # The mean of each part of the loss per labeled input: task, regularizer, kd.
    losses: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """``plan.npy`` was rewritten with the latest transport plan."""

    kind: ClassVar[str] = "plan"
    epoch: int


@dataclass(frozen=True)
class Warned:
    """Something the user should know of a run that goes on (a collapse, an export that
    differs): shown as a `warning` event."""

    kind: ClassVar[str] = "warning"
    message: str


@dataclass(frozen=True)
class Checkpointed:
    """A checkpoint inside an epoch is on disk (after ``batch`` batches of ``epoch``,
    1-based): whoever runs the trainer may copy it where another host resumes from."""

    kind: ClassVar[str] = "checkpointed"
    epoch: int
    batch: int


@dataclass(frozen=True)
class Stopped:
    """Stopped early with a checkpoint: ``reason`` is "signal" or "max_runtime"."""

    kind: ClassVar[str] = "stopped"
    reason: str
    epoch: int
    batch: int


@dataclass(frozen=True)
class Error:
    """The run cannot go on; ``code`` is one of the error codes above."""

    kind: ClassVar[str] = "error"
    code: str
    message: str


@dataclass(frozen=True)
class Done:
    """Every output is written."""

    kind: ClassVar[str] = "done"
    test_accuracy: float
    best_val_accuracy: float
    selected_epoch: int
    seconds: float
    collapsed: bool = False  # the collapse guard fired (otrt_core.train.collapse)


@dataclass(frozen=True)
class Converting:
    """A dataset conversion's progress (``python -m otrt_core.data.convert``): ``phase``
    is "listing" or "converting"; ``done`` records of ``total`` (``None`` until known)."""

    kind: ClassVar[str] = "converting"
    phase: str
    done: int
    total: int | None
    unreadable: int


@dataclass(frozen=True)
class Converted:
    """The snapshot is complete: ``details`` is what the dataset's resource shows."""

    kind: ClassVar[str] = "converted"
    details: dict[str, Any]


Event = (
    Start
    | Step
    | Epoch
    | Plan
    | Warned
    | Checkpointed
    | Stopped
    | Error
    | Done
    | Converting
    | Converted
)
EVENT_TYPES: dict[str, type] = {
    cls.kind: cls
    for cls in (
        Start,
        Step,
        Epoch,
        Plan,
        Warned,
        Checkpointed,
        Stopped,
        Error,
        Done,
        Converting,
        Converted,
    )
}


def event_line(event: Event) -> dict[str, Any]:
    """The JSON object of one event line."""
    return {"event": event.kind, **asdict(event)}


def parse_event(line: dict[str, Any]) -> Event | None:
    """The typed event of a parsed line; ``None`` for an unknown kind or missing fields."""
    cls = EVENT_TYPES.get(line.get("event"))
    if cls is None:
        return None
    known = {f.name for f in fields(cls)}
    try:
        return cls(**{k: v for k, v in line.items() if k in known})
    except TypeError:
        return None
