"""The test services answer, and a missing one is a failure under OTRT_REQUIRE_SERVICES=1."""

import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest
import redis

from tests.service.conftest import libpq_url
from tests.utils.processes import run_pytest

pytestmark = pytest.mark.services

ROOT = Path(__file__).resolve().parents[2]


def test_postgres_round_trips_a_row(database_url):
    with psycopg.connect(libpq_url(database_url)) as connection:
        connection.execute("CREATE TEMPORARY TABLE probe (value text)")
        token = uuid.uuid4().hex
        connection.execute("INSERT INTO probe VALUES (%s)", (token,))
        assert connection.execute("SELECT value FROM probe").fetchone() == (token,)


def test_redis_round_trips_a_key(redis_url):
    client = redis.Redis.from_url(redis_url)
    key = f"otrt-test:{uuid.uuid4().hex}"
    client.set(key, "1", ex=30)
    assert client.get(key) == b"1"
    client.delete(key)


def run_service_tests_against_nothing(require: bool) -> subprocess.CompletedProcess:
    """Runs this file's service tests with both URLs pointing at a closed port."""
    env = {
        "OTRT_TEST_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:9/test",
        "OTRT_TEST_REDIS_URL": "redis://127.0.0.1:9/0",
        "OTRT_REQUIRE_SERVICES": "1" if require else "0",
    }
    return run_pytest(__file__, "-k", "round_trips", env=env)


def test_missing_services_skip_by_default():
    result = run_service_tests_against_nothing(require=False)
    assert result.returncode == 0, result.stdout
    assert "2 skipped" in result.stdout


def test_missing_services_fail_when_required():
    result = run_service_tests_against_nothing(require=True)
    assert result.returncode == 1, result.stdout
    assert "OTRT_REQUIRE_SERVICES=1 makes it mandatory" in result.stdout
