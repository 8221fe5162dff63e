"""The SDK and the CLI client against a real `otrt serve` with auth on."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import otrt
from otrt_core.spec import JobSpec

pytestmark = pytest.mark.slow
TINY = {
    "mode": "supervised",
    "student": {"architecture": "mlp"},
    "dataset": {"name": "digits"},
    "training": {"epochs": 2, "batch_size": 64},
}


def test_importing_the_sdk_never_imports_torch():
    code = "import sys, otrt; otrt.Client; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_the_whole_story_with_the_sdk(client, tmp_path):
    teacher = client.create_job(TINY)
    assert client.wait(teacher["id"], timeout=120)["status"] == "succeeded"
    weights = client.download(teacher["id"], dest=tmp_path)
    sent = []
    uploaded = client.upload(weights, "teacher", progress=lambda done, total: sent.append(done))
    assert sent[-1] == weights.stat().st_size and uploaded["format"] == "safetensors"
    assert client.file(uploaded["id"])["sha256"] == uploaded["sha256"]

    spec = JobSpec.model_validate(
        {
            "mode": "distill",
            "teacher": {"architecture": "mlp", "checkpoint": uploaded["id"]},
            "student": {"architecture": "mlp_small"},
            "dataset": {"name": "digits"},
            "regularizer": {"kind": "ot"},  # its transport plan is an artifact
            "training": {"epochs": 2, "batch_size": 64},
        }
    )
    distill = client.create_job(spec)  # a pydantic spec works as well as a dict
    events = list(client.events(distill["id"], follow=True))
    assert events[-1]["type"] == "succeeded"
    assert [e["id"] for e in client.events(distill["id"], after=events[1]["id"])] == [
        e["id"] for e in events[2:]
    ]
    assert len(client.metrics(distill["id"])) == 2
    names = {a["name"] for a in client.artifacts(distill["id"])}
    assert {"student.safetensors", "metrics.json", "plan.npy"} <= names


def test_downloads_resume_and_are_verified(client, tmp_path):
    job = client.wait(client.create_job(TINY)["id"], timeout=120)
    whole = client.download(job["id"], "student.onnx", tmp_path / "whole.onnx")
    partial = tmp_path / "resumed.onnx.part"
    partial.write_bytes(whole.read_bytes()[:1000])  # an interrupted download
    resumed = client.download(job["id"], "student.onnx", tmp_path / "resumed.onnx")
    assert resumed.read_bytes() == whole.read_bytes() and not partial.exists()
    partial.write_bytes(b"corrupt" * 200)
    with pytest.raises(otrt.ApiError, match="sha256 mismatch"):
        client.download(job["id"], "student.onnx", tmp_path / "resumed.onnx")


def test_lists_page_through_everything_and_errors_are_typed(client, served):
    created = [client.create_job(TINY | {"metadata": {"n": str(i)}})["id"] for i in range(3)]
    listed = [job["id"] for job in client.jobs(page_size=1)]
    assert listed[:3] == created[::-1]
    with pytest.raises(otrt.NotFound):
        client.job("job_missing")
    with pytest.raises(otrt.Invalid) as invalid:
        client.create_job(
            {"mode": "distill", "student": {"architecture": "nope"}, "dataset": {"name": "digits"}}
        )
    assert any(e["loc"][-1] == "architecture" for e in invalid.value.errors)
    with pytest.raises(otrt.Unauthorized), otrt.Client(served[0], "otrt_wrong") as stranger:
        stranger.job(created[0])
    finished = client.wait(created[0], timeout=120)
    with pytest.raises(otrt.Conflict):
        client.cancel(finished["id"])
    long = client.create_job(TINY | {"training": {"epochs": 500}})
    with pytest.raises(otrt.JobTimeout):
        client.wait(long["id"], timeout=0.5, poll_seconds=0.1)
    client.cancel(long["id"])
    assert client.wait(long["id"], timeout=120)["status"] == "cancelled"


def otrt_cli(*args: str, served) -> subprocess.CompletedProcess:
    url, key = served
    env = os.environ | {"OTRT_URL": url, "OTRT_API_KEY": key}
    return subprocess.run(
        [sys.executable, "-m", "otrt", *args], capture_output=True, text=True, timeout=300, env=env
    )


def test_the_cli_client(served, tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(TINY))
    submitted = otrt_cli("submit", str(spec), "--wait", served=served)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.split()[0]
    assert "succeeded: test accuracy" in submitted.stdout

    listed = json.loads(otrt_cli("jobs", "--json", served=served).stdout)
    assert job_id in [job["id"] for job in listed]
    os.environ["COLUMNS"], narrow = "80", otrt_cli("jobs", served=served)
    del os.environ["COLUMNS"]
    assert job_id in narrow.stdout  # whole, at 80 columns (it was cut to job_0ff2f7…)
    assert "succeeded" in otrt_cli("status", job_id, served=served).stdout
    events = otrt_cli("events", job_id, "--json", served=served).stdout.splitlines()
    assert json.loads(events[-1])["type"] == "succeeded"
    downloaded = otrt_cli("download", job_id, "-o", str(tmp_path / "out"), served=served)
    assert (tmp_path / "out" / "student.safetensors").exists(), downloaded.stderr
    uploaded = otrt_cli(
        "upload",
        str(tmp_path / "out" / "student.safetensors"),
        "--purpose",
        "teacher",
        served=served,
    )
    assert uploaded.stdout.strip().startswith("file_")

    refused = otrt_cli("cancel", job_id, served=served)
    assert refused.returncode == 1 and refused.stderr.startswith("error: 409")
    assert len(refused.stderr.strip().splitlines()) == 1
    assert otrt_cli("submit", str(tmp_path / "missing.json"), served=served).returncode == 2
    unreachable = otrt_cli("jobs", "--url", "http://127.0.0.1:9", served=served)
    assert unreachable.returncode == 1 and "cannot reach" in unreachable.stderr


def test_submit_uploads_local_files_named_in_the_spec(served, client, tmp_path):
    teacher = client.wait(client.create_job(TINY)["id"], timeout=120)
    client.download(teacher["id"], dest=tmp_path)
    spec = tmp_path / "distill.json"
    spec.write_text(
        json.dumps(
            {
                "mode": "distill",
                "teacher": {"architecture": "mlp", "checkpoint": "student.safetensors"},
                "student": {"architecture": "mlp_small"},
                "dataset": {"name": "digits"},
                "training": {"epochs": 1},
            }
        )
    )
    submitted = otrt_cli("submit", str(spec), "--json", served=served)
    assert submitted.returncode == 0, submitted.stderr
    job = json.loads(submitted.stdout)
    assert job["spec"]["teacher"]["checkpoint"].startswith("file_")


def test_the_cli_reads_server_and_key_from_the_config_file(served, tmp_path):
    url, key = served
    config = tmp_path / "config.toml"
    config.write_text(f'url = "{url}"\napi_key = "{key}"\n')
    env = {k: v for k, v in os.environ.items() if k not in ("OTRT_URL", "OTRT_API_KEY")}
    listed = subprocess.run(
        [sys.executable, "-m", "otrt", "jobs", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env | {"OTRT_CONFIG_FILE": str(config)},
    )
    assert listed.returncode == 0, listed.stderr
    assert isinstance(json.loads(listed.stdout), list)
    config.write_text(f'url = "{url}"\napi_key = "otrt_wrong"\n')
    refused = subprocess.run(
        [sys.executable, "-m", "otrt", "jobs"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env | {"OTRT_CONFIG_FILE": str(config)},
    )
    assert refused.returncode == 1 and refused.stderr.startswith("error: 401")
