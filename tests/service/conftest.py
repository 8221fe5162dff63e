"""The real PostgreSQL and Redis that service tests talk to.

Their URLs come from OTRT_TEST_DATABASE_URL and OTRT_TEST_REDIS_URL (defaults:
the local servers). A server that does not answer skips the tests that need it,
or fails them when OTRT_REQUIRE_SERVICES=1 (as .ci/run sets): CI must never
pass by skipping.
"""

import os
import secrets

import psycopg
import pytest
import redis

DATABASE_URL = os.environ.get(
    "OTRT_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("OTRT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REQUIRE_SERVICES = os.environ.get("OTRT_REQUIRE_SERVICES") == "1"


def unavailable(what: str, error: Exception) -> None:
    reason = f"{what} is not reachable: {error}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (OTRT_REQUIRE_SERVICES=1 makes it mandatory)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def database_url() -> str:
    """The test database's SQLAlchemy URL, after checking that it answers."""
    try:
        with psycopg.connect(libpq_url(DATABASE_URL), connect_timeout=3):
            pass
    except psycopg.OperationalError as error:
        unavailable(f"PostgreSQL at {DATABASE_URL}", error)
    return DATABASE_URL


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis URL, after checking that it answers."""
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except redis.RedisError as error:
        unavailable(f"Redis at {REDIS_URL}", error)
    return REDIS_URL


def libpq_url(sqlalchemy_url: str) -> str:
    """postgresql+psycopg://... -> postgresql://... (what libpq reads)."""
    scheme, rest = sqlalchemy_url.split("://", 1)
    return f"{scheme.split('+', 1)[0]}://{rest}"


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path):
    """A migrated database: SQLite in a temp dir, or a fresh schema on the real PostgreSQL."""
    from sqlalchemy import text

    from otrt_core.jobs.db import make_engine, migrate

    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'otrt.db'}")
        migrate(engine)
        yield engine
        engine.dispose()
        return
    url = request.getfixturevalue("database_url")
    schema = f"otrt_test_{secrets.token_hex(6)}"
    admin = make_engine(url)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    engine = make_engine(url, connect_args={"options": f"-csearch_path={schema}"})
    try:
        migrate(engine)
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def store(engine):
    from otrt_core.jobs.db import make_sessions
    from otrt_core.jobs.store import JobStore

    return JobStore(make_sessions(engine))
