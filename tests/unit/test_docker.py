"""docker-compose.yml and the Dockerfiles, read as files (no Docker engine runs here).

`docker compose config` would be the real check; this machine has the Docker
client without the compose plugin, so the YAML is parsed and its promises checked.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from otrt_core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def test_the_services_of_the_distributed_shape_are_there():
    assert {"postgres", "redis", "minio", "bucket", "migrate", "api", "worker-gpu0"} <= set(
        SERVICES
    )


def test_start_order_waits_for_health_and_for_the_migration():
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker-gpu0"):
        depends = SERVICES[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["redis"]["condition"] == "service_healthy"
        assert depends["bucket"]["condition"] == "service_completed_successfully"
    assert SERVICES["bucket"]["depends_on"]["minio"]["condition"] == "service_healthy"
    for name in ("postgres", "redis", "minio", "api"):
        assert SERVICES[name]["healthcheck"]["test"], name


def test_redis_keeps_messages():
    command = " ".join(SERVICES["redis"]["command"])
    assert "--appendonly yes" in command and "--maxmemory-policy noeviction" in command


def test_workers_reserve_a_gpu_and_have_time_to_checkpoint():
    worker = SERVICES["worker-gpu0"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"] and device["device_ids"] == ["0"]
    assert worker["environment"]["CUDA_VISIBLE_DEVICES"] == "0"
    grace = re.fullmatch(r"(\d+)s", worker["stop_grace_period"])
    assert grace and int(grace.group(1)) >= 60
    assert worker["build"]["dockerfile"] == "docker/worker.Dockerfile"


def test_api_replicas_and_workers_share_files_through_minio():
    """What hosts share is in the S3 store; the bucket job creates the bucket .env names."""
    assert SERVICES["api"]["deploy"]["replicas"] >= 2
    env = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert env["OTRT_STORAGE_URL"].startswith("s3://")
    assert env["OTRT_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert "mc mb" in SERVICES["bucket"]["command"][0]
    assert "OTRT_STORAGE_URL" in SERVICES["bucket"]["command"][0]
    assert SERVICES["minio"]["environment"]["MINIO_ROOT_USER"].startswith("${AWS_ACCESS_KEY_ID")
    assert {"minio", "local"} <= set(COMPOSE["volumes"])


def test_env_example_names_only_real_settings():
    names = [
        line.split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    fields = {f"OTRT_{name.upper()}" for name in Settings.model_fields}
    otrt_names = [name for name in names if name.startswith("OTRT_")]
    assert otrt_names and set(otrt_names) <= fields, set(otrt_names) - fields
    for service in ("migrate", "api", "worker-gpu0"):
        assert SERVICES[service]["env_file"] == ".env"


def test_images_run_as_a_user_and_the_api_checks_its_health():
    api = (ROOT / "docker" / "api.Dockerfile").read_text()
    worker = (ROOT / "docker" / "worker.Dockerfile").read_text()
    assert re.search(r"^USER otrt$", api, re.M) and re.search(r"^USER otrt$", worker, re.M)
    assert "HEALTHCHECK" in api and "/healthz" in api
    assert worker.startswith("#") and "FROM nvidia/cuda:" in worker and "/whl/cu" in worker
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored
