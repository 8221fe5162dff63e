"""The real-service fixtures, for benchmarks that run on PostgreSQL and Redis."""

from tests.service.conftest import database_url, redis_url

__all__ = ["database_url", "redis_url"]
