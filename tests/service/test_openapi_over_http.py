"""schemathesis over real HTTP, every phase including the stateful one (which follows the
document's links from created files and jobs to the operations that take their ids), against
`otrt serve` and against `otrt api` (uvicorn, auth on): no server error, no undocumented
status or header, no response that breaks its schema.

On `otrt serve` the jobs the fuzzer creates run in its executor, one at a time, until the
server stops; on `otrt api` they are queued to a Redis database no worker reads.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import redis

from api.examples import JOB_EXAMPLES
from otrt_core.spec import resolve_spec
from tests.service.conftest import redis_database
from tests.utils.processes import start_server

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)


@pytest.fixture(scope="module", params=["serve", "api"])
def api_over_http(request, tmp_path_factory):
    data = tmp_path_factory.mktemp(f"otrt-{request.param}")
    env = {
        "OTRT_DATA_DIR": str(data),
        "OTRT_DATABASE_URL": f"sqlite:///{data / 'otrt.db'}",
        "OTRT_AUTH": "on",
        "OTRT_RATE_LIMIT": "100000",  # the fuzzer's pace is not what is tested
        "OTRT_RATE_BURST": "100000",
    }
    broker = None
    if request.param == "api":
        redis_url = request.getfixturevalue("redis_url")
        broker = redis_database(redis_url, "openapi_over_http")
        env["OTRT_BROKER_URL"] = broker
    created = subprocess.run(
        [sys.executable, "-m", "otrt", "keys", "create", "--name", "fuzzer"],
        capture_output=True,
        text=True,
        check=True,
        env=os.environ | env,
    )
    process, client = start_server(data, env, command=request.param)
    yield str(client.base_url), created.stdout.strip()
    process.terminate()
    process.communicate(timeout=60)
    client.close()
    if broker is not None:
        redis.Redis.from_url(broker).flushdb()


def test_every_phase_of_schemathesis_over_http_finds_nothing(api_over_http):
    url, key = api_over_http
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{url}/openapi.json",
        "--header", f"Authorization: Bearer {key}",
        "--phases", "examples,coverage,fuzzing,stateful",
        "--checks", ",".join(CHECKS),
        "--max-examples", "10",
        "--generation-deterministic",
        "--workers", "1",
        "--no-color",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    summary = done.stdout[-4000:]
    assert done.returncode == 0, summary
    assert "✅ Stateful" in summary and "✅ Examples" in summary, summary


def test_the_documented_job_examples_are_valid_specs():
    for name, example in JOB_EXAMPLES.items():
        assert resolve_spec(example["value"]).mode == example["value"]["mode"], name
