"""Response shapes of API.md, as pydantic models: they make the OpenAPI document exact."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from otrt_core.jobs.tables import Job
from otrt_core.jobs.uploads import MAX_PART_SIZE, MIN_PART_SIZE, UploadState, planned_parts


class ProblemItem(BaseModel):
    loc: list[str | int]
    msg: str


class Problem(BaseModel):
    """RFC 9457 problem document (``application/problem+json``)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[ProblemItem] = Field(default_factory=list)


class _FromRow(BaseModel):
    """A response read field by field from a table row."""

    @classmethod
    def of(cls, row: object) -> Self:
        return cls.model_validate(row, from_attributes=True)


class FileOut(_FromRow):
    id: str
    purpose: str
    filename: str
    bytes: int
    sha256: str
    created_at: datetime
    format: str
    details: dict[str, Any]


class FilePage(BaseModel):
    data: list[FileOut]
    has_more: bool
    next_after: str | None


class Progress(BaseModel):
    epoch: int = 0
    epochs: int | None = Field(description="Known once the trainer starts when set from the data.")
    step: int = 0
    steps: int | None = None
    fraction: float = 0.0


class Metrics(BaseModel):
    train_loss: float | None = None
    val_accuracy: float | None = None
    best_val_accuracy: float | None = None
    ot_distance: float | None = None
    test_accuracy: float | None = None
    collapsed: bool | None = Field(
        default=None,
        description="Once succeeded: whether the student ended at chance, or stayed there "
        "for the second half of training (a `warning` event says why).",
    )


class JobError(BaseModel):
    code: str
    message: str


class JobOut(BaseModel):
    id: str
    status: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    spec: dict[str, Any]
    attempt: int
    progress: Progress
    eta_seconds: float | None
    metrics: Metrics
    error: JobError | None
    metadata: dict[str, str]
    sweep_id: str | None = Field(default=None, description="The sweep the job is a trial of.")

    @classmethod
    def of(cls, job: Job) -> JobOut:
        return cls(
            id=job.id,
            status=job.status,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            spec=job.spec,
            attempt=job.attempt,
            progress=Progress.model_validate(job.progress),
            eta_seconds=job.eta_seconds,
            metrics=Metrics.model_validate(job.metrics),
            error=JobError.model_validate(job.error) if job.error else None,
            metadata=job.job_metadata,
            sweep_id=job.sweep_id,
        )


class JobPage(BaseModel):
    data: list[JobOut]
    has_more: bool
    next_after: str | None


class MetricRecord(BaseModel):
    epoch: int
    step: int | None = None
    train_loss: float | None = None
    train_accuracy: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    ot_distance: float | None = None
    lr: float | None = None
    seconds: float | None = None
    losses: dict[str, float] | None = Field(
        default=None,
        description="Each part of the training loss per labeled input: `task`, "
        "`regularizer`, `kd`.",
    )


class EventOut(_FromRow):
    id: int
    at: datetime
    type: str
    message: str
    data: dict[str, Any]


class ArtifactOut(_FromRow):
    name: str
    bytes: int
    sha256: str
    created_at: datetime


Source = Literal["zoo", "timm", "torchvision"]


class ArchitectureOut(BaseModel):
    name: str
    source: Source
    family: str
    parameters: int | None = Field(
        default=None, description="At the default input shape, 10 classes; zoo only."
    )
    input_shape: list[int] = Field(default=[3, 224, 224], description="The default one.")
    stages: list[str] = Field(
        default=[], description="Zoo stage names; timm and torchvision layers are module paths."
    )
    head_prefix: str | None = None


class DatasetOut(BaseModel):
    name: str
    input_shape: list[int]
    num_classes: int
    train_size: int
    test_size: int
    description: str


class ModelCost(BaseModel):
    params: int | None = None
    macs: int | None = Field(
        default=None, description="Of convolutions and linear layers, for one input."
    )
    latency_ms: dict[str, float] = Field(
        description="Median onnxruntime CPU latency: `b1` (batch 1) and `b64` (batch 64)."
    )


class Int8Out(BaseModel):
    accuracy: float
    drop: float = Field(description="Test accuracy of the float student minus the int8 one's.")
    latency_ms: dict[str, float]
    bytes: int
    warning: str | None = None


class ReportOut(BaseModel):
    """A finished job's report (API.md, "Report"); `report.html` shows it to a person."""

    title: str
    test_accuracy: float
    ci95: list[float] = Field(description="The 95% Wilson interval of the test accuracy.")
    test_size: int
    per_class: list[dict[str, Any]] = Field(description="`class`, `accuracy`, `count` each.")
    confusion_matrix: list[list[int]] = Field(description="Rows true, columns predicted.")
    ece: float = Field(description="Expected calibration error, 15 equal-width bins.")
    reliability: list[dict[str, float]] = Field(description="The reliability diagram's bins.")
    teacher_agreement: float | None = Field(
        description="Top-1 agreement with the teacher on the test set (same task only)."
    )
    student: ModelCost
    teacher: ModelCost | None = None
    ratios: dict[str, float | None] | None = Field(
        default=None, description="Student over teacher: `params`, `macs`, `latency_b1`."
    )
    int8: Int8Out
    collapsed: bool = Field(
        default=False,
        description="The student ended at chance, or stayed there for the second half of "
        "training (a `warning` event says why).",
    )


class SweepTrialOut(BaseModel):
    """One planned job of a sweep: a point of the space at one seed, or a baseline."""

    job_id: str | None = Field(description="None while it waits for a free slot.")
    role: Literal["point", "scratch", "kd"]
    point: int | None = Field(description="The point's number, in the order it was proposed.")
    seed: int = Field(description="Added to the base job's training.seed.")
    params: dict[str, Any]
    status: str = Field(
        description="The job's status; else `planned` (no slot yet), `skipped` (the sweep "
        "ended first) or `pruned` (early stopping ended its point)."
    )
    metric: float | None
    test_accuracy: float | None
    collapsed: bool = Field(
        default=False,
        description="The trial's student ended at chance (it counts at its accuracy).",
    )


class SweepBest(BaseModel):
    point: int
    job_id: str = Field(description="The best point's best seed, whose artifacts the sweep has.")
    metric: float = Field(description="The point's metric, the mean over its seeds.")
    params: dict[str, Any]
    spec: dict[str, Any]


class SweepGain(BaseModel):
    gain: float | None = Field(description="Best point minus baseline, test accuracy, mean.")
    ci95: list[float] | None = Field(description="Paired 95% interval over the seeds (t).")
    seeds: int


class SweepPoints(BaseModel):
    planned: int
    total: int


class SweepOut(BaseModel):
    id: str
    status: Literal["running", "cancelling", "succeeded", "failed", "cancelled"]
    created_at: datetime
    finished_at: datetime | None
    search: str
    metric: str
    points: SweepPoints
    parallel: int
    trials: list[SweepTrialOut]
    best: SweepBest | None = Field(description="So far while it runs; final once it ended.")
    compare: dict[str, SweepGain] = Field(description="Filled in when the sweep ends.")


class SweepPage(BaseModel):
    data: list[SweepOut]
    has_more: bool
    next_after: str | None


class DatasetRegistration(BaseModel):
    """A dataset to register (API.md v1.2): a source converted once into a snapshot."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(
        min_length=1,
        max_length=1000,
        description="s3://bucket/prefix/ or file:///dir/ under OTRT_DATA_SOURCES, or an "
        "uploaded ImageFolder .zip (file_…).",
    )
    format: Literal["auto", "imagefolder", "webdataset", "parquet", "zip"] = "auto"
    name: str | None = Field(default=None, max_length=200)


class DatasetImages(BaseModel):
    min: list[int] | None = None
    median: list[int] | None = None
    max: list[int] | None = None
    modes: list[str] = []


class UnreadableFile(BaseModel):
    name: str
    reason: str


class Unreadable(BaseModel):
    count: int
    files: list[UnreadableFile] = Field(description="The first 100.")


class RegisteredDatasetOut(BaseModel):
    id: str
    name: str
    source: str
    format: str
    status: Literal["inspecting", "converting", "ready", "failed"]
    progress: dict[str, Any]
    error: JobError | None
    classes: list[str] | None
    counts: dict[str, dict[str, int]] | None = Field(
        description="Images per class name, per split (train, val, test, unlabeled)."
    )
    images: DatasetImages | None
    bytes: int | None = Field(description="Of the stored snapshot.")
    unreadable: Unreadable | None
    fingerprint: str | None
    channels: int | None = Field(description="1 when every image is grey, else 3.")
    created_at: datetime
    ready_at: datetime | None


class RegisteredDatasetPage(BaseModel):
    data: list[RegisteredDatasetOut]
    has_more: bool
    next_after: str | None


class UploadRequest(BaseModel):
    """An upload in parts (API.md v1.3): the whole's size, and its sha256 to check."""

    model_config = ConfigDict(extra="forbid")

    filename: str = Field(min_length=1, max_length=255, description="A .zip or .npz dataset.")
    size: int = Field(ge=1, description="Bytes of the whole (within OTRT_MAX_PUSH_BYTES).")
    sha256: str | None = Field(
        default=None, pattern="^[0-9a-fA-F]{64}$", description="Checked on completion."
    )
    part_size: int | None = Field(
        default=None,
        ge=MIN_PART_SIZE,
        le=MAX_PART_SIZE,
        description="Default 16 MiB (more where the whole needs over 10,000 parts).",
    )


class UploadPartOut(BaseModel):
    number: int
    bytes: int
    url: str | None = Field(
        default=None,
        description=(
            "Where to PUT it: a presigned S3 URL (no Authorization header); absent: "
            "PUT /v1/uploads/{id}/parts/{number}. Given for the parts not yet stored."
        ),
    )


class StoredPartOut(BaseModel):
    number: int
    bytes: int
    etag: str = Field(description="The part's sha256 on a local store; S3's ETag on S3.")


class UploadOut(BaseModel):
    id: str
    filename: str
    size: int
    sha256: str | None
    part_size: int
    parts: list[UploadPartOut] = Field(description="Every part of the whole, in order.")
    stored: list[StoredPartOut] = Field(description="The parts stored so far.")
    created_at: datetime
    expires_at: datetime

    @classmethod
    def of(cls, state: UploadState) -> UploadOut:
        upload = state.upload
        return cls(
            id=upload.id,
            filename=upload.filename,
            size=upload.bytes,
            sha256=upload.sha256,
            part_size=upload.part_size,
            parts=[
                UploadPartOut(number=n, bytes=b, url=state.urls.get(n))
                for n, b in planned_parts(state)
            ],
            stored=[
                StoredPartOut(number=p.number, bytes=p.bytes, etag=p.etag)
                for _, p in sorted(state.stored.items())
            ],
            created_at=upload.created_at,
            expires_at=upload.expires_at,
        )
