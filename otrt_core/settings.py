"""otrt's settings: one pydantic-settings class, read from OTRT_* environment variables.

Nothing else in otrt reads the environment; entry points build a ``Settings``
and pass plain values down.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict, TomlConfigSettingsSource


def config_file() -> Path:
    """The optional TOML file of settings: ``$OTRT_CONFIG_FILE``, else the user's config dir."""
    if os.environ.get("OTRT_CONFIG_FILE"):
        return Path(os.environ["OTRT_CONFIG_FILE"])
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "otrt" / "config.toml"


class Settings(BaseSettings):
    """Every setting of otrt, with its default.

    Read from ``OTRT_*`` environment variables, then from the TOML config file
    (:func:`config_file`; keys without the prefix, e.g. ``url = "…"``).
    """

    model_config = SettingsConfigDict(env_prefix="OTRT_", extra="ignore")

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ):
        toml = TomlConfigSettingsSource(settings_cls, toml_file=config_file())
        return init_settings, env_settings, toml, file_secret_settings

    # --- the client (SDK and `otrt submit`, `otrt jobs`, …) ------------------------------
    url: str = Field(default="http://127.0.0.1:8000", description="The otrt server to talk to.")
    api_key: str | None = Field(default=None, description="The API key the client sends.")

    torch_threads: int | None = Field(
        default=None,
        ge=1,
        description=(
            "CPU threads per training process (torch.set_num_threads). Unset: torch's "
            "default, one per core; set it when several training processes share a machine, "
            "or they stall each other."
        ),
    )
    trainer_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description=(
            "The niceness of training processes (and their data loaders). Above 0, the "
            "API and the executor's own threads keep their share of the cores while jobs "
            "train on the same host; 0 gives training the same priority."
        ),
    )
    datasets_root: Path | None = Field(
        default=None,
        description="Where installed datasets are looked up before their system paths.",
    )

    # --- the service ---------------------------------------------------------------------
    data_dir: Path = Field(
        default=Path("var"),
        description="Uploads, artifacts, job working directories and the SQLite file.",
    )
    storage_url: str | None = Field(
        default=None,
        description=(
            "Where uploads, checkpoints and artifacts live: file:///a/dir, or s3://bucket/prefix "
            "(any S3-compatible store) so that API replicas and workers on several hosts share "
            "them. Unset: <data_dir>/store."
        ),
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="The S3 API's URL for MinIO and the like. Unset: AWS."
    )
    s3_presign: Literal["on", "off"] = Field(
        default="off",
        description=(
            "Downloads from S3 redirect to a presigned URL instead of passing through, and "
            "each part of an upload in parts gets a presigned URL the client PUTs it to."
        ),
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL. Unset: SQLite at <data_dir>/otrt.db."
    )
    broker_url: str | None = Field(
        default=None, description="Celery broker (Redis). Unset: the embedded executor."
    )
    auth: Literal["on", "off"] | None = Field(
        default=None,
        description="API keys on every /v1 route. Unset: on, except `otrt serve` on loopback.",
    )
    max_upload_bytes: int = Field(default=2 * 1024**3, ge=1, description="Upload size limit.")
    max_push_bytes: int = Field(
        default=1024**4,
        ge=1,
        description="Size limit of one upload in parts (/v1/uploads, `otrt datasets push`).",
    )
    upload_expiry_seconds: float = Field(
        default=24 * 3600.0,
        gt=0,
        description="An upload in parts not completed this long after it began is aborted.",
    )
    max_decoded_bytes: int = Field(
        default=256 * 1024**2,
        ge=1,
        description=(
            "The in-memory limit: what one uploaded dataset may cost once decoded (arrays as "
            "stored plus the float32 inputs, read from its headers before decoding; past it "
            "the upload is 413: register it instead), and below which a registered dataset "
            "is held in memory rather than streamed."
        ),
    )
    data_sources: str = Field(
        default="",
        description=(
            "Comma-separated URI prefixes a dataset may be registered from "
            "(e.g. s3://team-data/,file:///mnt/datasets/). Unset: none, only uploads."
        ),
    )
    max_image_pixels: int = Field(
        default=64_000_000,
        ge=1,
        description=(
            "Pixels one image of a registered dataset may have, read from its header before "
            "decoding (a 48-megapixel photo passes; past it the image is unreadable)."
        ),
    )
    max_unreadable_fraction: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Unreadable files a registered dataset may have before it fails.",
    )
    dataset_shard_bytes: int = Field(
        default=64 * 1024**2,
        ge=1024,
        description="A registered dataset's shards are about this large.",
    )
    shard_cache_bytes: int = Field(
        default=4 * 1024**3,
        ge=0,
        description="Shards of remote registered datasets cached on a worker host, shared by "
        "its jobs (<data_dir>/shard-cache); least recently used removed past it.",
    )
    teacher_cache_bytes: int = Field(
        default=8 * 1024**3,
        ge=0,
        description="A job's teacher outputs kept on disk (memory-mapped) when they do not "
        "fit the device; past it the teacher runs every step (the start event says why).",
    )
    loader_workers: int | None = Field(
        default=None,
        ge=0,
        description=(
            "DataLoader worker processes of a training process on streamed data. Unset: one "
            "per core, at most 8 (0 decodes in the training process itself)."
        ),
    )
    checkpoint_seconds: float = Field(
        default=600.0,
        gt=0,
        description="The trainer also checkpoints inside an epoch this often (loader state too).",
    )
    max_json_bytes: int = Field(
        default=1024**2, ge=1024, description="Size limit of a JSON request body (413 past it)."
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="Log every job as an MLflow run there (pip install otrt[mlflow]).",
    )
    mlflow_experiment: str = Field(default="otrt", description="The MLflow experiment's name.")
    mlflow_artifact_location: str | None = Field(
        default=None,
        description="Where a new MLflow experiment keeps artifacts (default: the server's).",
    )
    orphan_grace_seconds: float = Field(
        default=3600.0,
        ge=0,
        description=(
            "On start, uploads with no record and partial files older than this are removed "
            "(younger ones may be another replica's upload in flight)."
        ),
    )
    # --- sharing: defaults for keys without their own quota (`otrt keys set-quota`) ------
    max_running: int | None = Field(
        default=None, ge=1, description="Jobs of one key running at once. Unset: no limit."
    )
    max_queued: int = Field(
        default=1000, ge=1, description="Jobs of one key waiting at once; past it, 429."
    )
    max_sweep_jobs: int = Field(
        default=256,
        ge=1,
        description="Jobs one sweep may run in all ((points + baselines) x seeds); past it, 422.",
    )
    rate_limit: float = Field(
        default=50.0, gt=0, description="Requests per second one key may make (429 past it)."
    )
    rate_burst: int = Field(
        default=200, ge=1, description="Requests one key may make at once before the rate applies."
    )
    lease_seconds: float = Field(
        default=60.0, gt=0, description="How long a claimed job stays its executor's unrenewed."
    )
    heartbeat_seconds: float = Field(
        default=5.0, gt=0, description="Lease renewal and cancel polling interval."
    )
    max_attempts: int = Field(
        default=3, ge=1, description="Attempts of a job whose worker dies before it is failed."
    )
    requeue_after_seconds: float = Field(
        default=60.0, gt=0, description="A queued job untouched this long is dispatched again."
    )
    trainer_device: str = Field(default="auto", description="--device of the trainer process.")
    worker_devices: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Devices an executor offers a job (jobs with training.gpus up to it). Unset: the "
            "CUDA devices it sees, or 1 without CUDA (set 2 or more to run multi-process "
            "jobs on the CPU)."
        ),
    )
    visibility_timeout_seconds: int = Field(
        default=8 * 86_400,
        ge=60,
        description=(
            "Redis' visibility timeout: longer than any job's max_runtime_s (at most 7 days), "
            "so that a running job's message is never handed to a second worker."
        ),
    )

    @property
    def resolved_loader_workers(self) -> int:
        """``loader_workers``, or one per core (at most 8)."""
        if self.loader_workers is not None:
            return self.loader_workers
        return min(8, len(os.sched_getaffinity(0)))

    @property
    def allowed_data_sources(self) -> list[str]:
        return [prefix.strip() for prefix in self.data_sources.split(",") if prefix.strip()]

    @property
    def resolved_database_url(self) -> str:
        """The configured URL, or the embedded SQLite file under the data directory."""
        return self.database_url or f"sqlite:///{(self.data_dir / 'otrt.db').resolve()}"
