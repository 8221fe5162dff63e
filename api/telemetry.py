"""Prometheus metrics of one app: request latency, and job counts read at scrape time."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Receive, Scope, Send

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class JobsCollector(Collector):
    """``otrt_jobs{status}`` and ``otrt_queue_depth`` from the store, at each scrape."""

    def __init__(self, counts_by_status: Callable[[], dict[str, int]]) -> None:
        self.counts_by_status = counts_by_status

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = self.counts_by_status()
        jobs = GaugeMetricFamily("otrt_jobs", "Jobs by status.", labels=["status"])
        for status, count in counts.items():
            jobs.add_metric([status], count)
        yield jobs
        yield GaugeMetricFamily("otrt_queue_depth", "Jobs waiting to run.", value=counts["queued"])


def make_registry(
    counts_by_status: Callable[[], dict[str, int]],
) -> tuple[CollectorRegistry, Histogram]:
    registry = CollectorRegistry()
    registry.register(JobsCollector(counts_by_status))
    latency = Histogram(
        "otrt_http_request_duration_seconds",
        "HTTP request latency by route template.",
        ["method", "route", "status"],
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    return registry, latency


class LatencyMiddleware:
    """Times every HTTP request, labelled by its route template (not the raw path)."""

    def __init__(self, app: ASGIApp, latency: Histogram) -> None:
        self.app, self.latency = app, latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), [500]

        async def send_and_note(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = _route_template(scope)
            self.latency.labels(scope["method"], route, str(status[0])).observe(
                time.perf_counter() - start
            )


def _route_template(scope: Scope) -> str:
    """The matched route's template (the router records the route in the scope)."""
    return getattr(scope.get("route"), "path", None) or "unmatched"
