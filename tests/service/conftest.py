"""The real PostgreSQL, Redis and S3 API (moto's server) that service tests talk to.

Their URLs come from OTRT_TEST_DATABASE_URL and OTRT_TEST_REDIS_URL (defaults:
the local servers). A server that does not answer skips the tests that need it,
or fails them when OTRT_REQUIRE_SERVICES=1 (as .ci/run sets): CI must never
pass by skipping.
"""

import os
import secrets
from collections.abc import Iterator

import psycopg
import pytest
import redis

from tests.utils.guards import missing
from tests.utils.s3 import new_bucket, s3_server

DATABASE_URL = os.environ.get(
    "OTRT_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("OTRT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def unavailable(what: str, error: Exception) -> None:
    missing(f"{what} is not reachable: {error}")


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


# Redis databases the tests that flush one may use, per pytest-xdist worker (gw0, gw1, …):
# each worker gets its own, so two workers never flush each other's broker.
REDIS_DATABASES = {
    "distributed": 0,
    "openapi_over_http": 1,
    "queue_load": 2,
    "sweeps": 3,
    "datasets": 4,
}


def emptied_redis_database(redis_url: str, use: str) -> str:
    """:func:`redis_database`, flushed: a broker with no message of an earlier test."""
    import redis

    url = redis_database(redis_url, use)
    redis.Redis.from_url(url).flushdb()
    return url


def redis_database(redis_url: str, use: str) -> str:
    """The URL of the Redis database kept for ``use`` in this test worker (1 to 15)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    number = 1 + int(worker) * len(REDIS_DATABASES) + REDIS_DATABASES[use]
    if number > 15:
        pytest.fail(f"Redis has databases 0-15; xdist worker gw{worker} needs {number}")
    return f"{redis_url.rsplit('/', 1)[0]}/{number}"


def libpq_url(sqlalchemy_url: str) -> str:
    """postgresql+psycopg://... -> postgresql://... (what libpq reads)."""
    scheme, rest = sqlalchemy_url.split("://", 1)
    return f"{scheme.split('+', 1)[0]}://{rest}"


@pytest.fixture
def postgres_schema_url(database_url: str):
    """A URL whose connections live in a fresh schema of the real PostgreSQL, dropped after."""
    from sqlalchemy import text

    from otrt_core.jobs.db import make_engine

    schema = f"otrt_test_{secrets.token_hex(6)}"
    admin = make_engine(database_url)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{database_url}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path):
    """A migrated database: SQLite in a temp dir, or a fresh schema on the real PostgreSQL."""
    from otrt_core.jobs.db import make_engine, migrate

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'otrt.db'}"
    else:
        url = request.getfixturevalue("postgres_schema_url")
    engine = make_engine(url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine):
    from otrt_core.jobs.db import make_sessions
    from otrt_core.jobs.store import JobStore

    return JobStore(make_sessions(engine))


@pytest.fixture
def parts(engine, tmp_path):
    """The in-process API's parts on each real database (auth on)."""
    from tests.service.api_helpers import make_parts

    return make_parts(engine, tmp_path)


@pytest.fixture
def client(parts):
    from tests.service.api_helpers import api_client

    with api_client(parts) as client:
        yield client


@pytest.fixture
def alice(parts) -> dict[str, str]:
    from tests.service.api_helpers import key_header

    return key_header(parts, "alice")


@pytest.fixture
def bob(parts) -> dict[str, str]:
    from tests.service.api_helpers import key_header

    return key_header(parts, "bob")


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory) -> Iterator[str]:
    """A real S3 API (moto's server) for the session, with test credentials in the
    environment (child processes inherit them)."""
    with s3_server(tmp_path_factory.mktemp("s3") / "moto.log") as server:
        yield server.url


@pytest.fixture
def s3_bucket(s3_endpoint) -> str:
    """A fresh, empty bucket on the session's S3 server."""
    return new_bucket(s3_endpoint)
