"""Prometheus metrics of the engine, kept cheap: counters change with events, never by scanning.

``GET /metrics`` renders the text exposition format (version 0.0.4):
jobs by status (a gauge read from the store's index sizes), runs started,
finished and failed (counters), the size of the job log files (a gauge the
log store keeps up to date as it writes and deletes) and the files and bytes
log retention deleted (counters), and request latency (a histogram by method
and route template).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping
from typing import Final

from aiohttp import web

from shared.contract import JobStatus
from shared.web import UNMATCHED_ROUTE

#: Upper bounds (seconds) of the request latency histogram buckets.
LATENCY_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


class _Histogram:
    __slots__ = ("count", "counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0
        self.count = 0


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """The engine's counters and the request latency histogram.

    ``jobs_created``, ``runs_started``, ``runs_finished`` (ended DONE),
    ``runs_failed`` (ended FAILED), ``logs_expired`` and
    ``log_bytes_expired`` (job log files, and their bytes, deleted by log
    retention) count events since this process started.
    """

    def __init__(self) -> None:
        self.jobs_created = 0
        self.runs_started = 0
        self.runs_finished = 0
        self.runs_failed = 0
        self.logs_expired = 0
        self.log_bytes_expired = 0
        self._latency: dict[tuple[str, str], _Histogram] = {}
        self._by_resource: dict[tuple[str, web.AbstractResource | None], _Histogram] = {}

    def observe_request(self, request: web.Request, status: int, seconds: float) -> None:
        """Record one request's latency under its method and route template (the request wrapper's ``on_done`` hook)."""
        method = request.method
        resource = request.match_info.route.resource
        # Looked up by the resource object itself (fixed for matched routes; None for unmatched
        # paths): no template string is rebuilt per request.
        hist = self._by_resource.get((method, resource))
        if hist is None:
            hist = self._histogram(method, resource)
        hist.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        hist.total += seconds
        hist.count += 1

    def _histogram(self, method: str, resource: web.AbstractResource | None) -> _Histogram:
        # The template (e.g. /api/jobs/{id}), never the raw path, and a fixed set of method labels:
        # label cardinality stays bounded, and so does the cache (unknown methods are not cached).
        # The catch-all route (shared.web.UNMATCHED_ROUTE) is one label, whatever path it caught.
        route = UNMATCHED_ROUTE if resource is None or resource.name == UNMATCHED_ROUTE else resource.canonical
        known = method in _METHODS
        key = (method if known else "other", route)
        hist = self._latency.get(key)
        if hist is None:
            hist = self._latency[key] = _Histogram()
        if known:
            self._by_resource[(method, resource)] = hist
        return hist

    def render(
        self,
        *,
        jobs_by_status: Mapping[JobStatus, int],
        journal_healthy: bool,
        log_bytes: int | None = None,
        open_requests: int = 0,
    ) -> str:
        """Return the whole exposition text; ``log_bytes`` (job log files on disk) is left out when None.

        ``open_requests`` is how many run requests wait for approval (two-person rule).
        """
        out: list[str] = []
        add = out.append
        add("# HELP engine_jobs Jobs in the store by status.")
        add("# TYPE engine_jobs gauge")
        for status in JobStatus:
            add(f'engine_jobs{{status="{status}"}} {jobs_by_status.get(status, 0)}')
        counters: list[tuple[str, str, Callable[[], int]]] = [
            ("engine_jobs_created_total", "Jobs created since start.", lambda: self.jobs_created),
            ("engine_runs_started_total", "Runs started since start.", lambda: self.runs_started),
            ("engine_runs_finished_total", "Runs that ended DONE since start.", lambda: self.runs_finished),
            ("engine_runs_failed_total", "Runs that ended FAILED since start.", lambda: self.runs_failed),
            (
                "engine_job_logs_expired_total",
                "Job log files deleted by log retention since start.",
                lambda: self.logs_expired,
            ),
            (
                "engine_job_log_expired_bytes_total",
                "Bytes of job log files deleted by log retention since start.",
                lambda: self.log_bytes_expired,
            ),
        ]
        for name, help_text, value in counters:
            add(f"# HELP {name} {help_text}")
            add(f"# TYPE {name} counter")
            add(f"{name} {value()}")
        if log_bytes is not None:
            add("# HELP engine_job_log_bytes Bytes of job log files on disk.")
            add("# TYPE engine_job_log_bytes gauge")
            add(f"engine_job_log_bytes {log_bytes}")
        add("# HELP engine_run_requests_open Run requests waiting for approval.")
        add("# TYPE engine_run_requests_open gauge")
        add(f"engine_run_requests_open {open_requests}")
        add("# HELP engine_journal_healthy 1 while the journal accepts appends, else 0.")
        add("# TYPE engine_journal_healthy gauge")
        add(f"engine_journal_healthy {int(journal_healthy)}")
        add("# HELP engine_request_duration_seconds HTTP request latency by method and route.")
        add("# TYPE engine_request_duration_seconds histogram")
        for (method, route), hist in sorted(self._latency.items()):
            labels = f'method="{method}",route="{_label(route)}"'
            cumulative = 0
            for bound, count in zip(LATENCY_BUCKETS, hist.counts, strict=False):
                cumulative += count
                add(f'engine_request_duration_seconds_bucket{{{labels},le="{bound:g}"}} {cumulative}')
            add(f'engine_request_duration_seconds_bucket{{{labels},le="+Inf"}} {hist.count}')
            add(f"engine_request_duration_seconds_sum{{{labels}}} {hist.total:.6f}")
            add(f"engine_request_duration_seconds_count{{{labels}}} {hist.count}")
        return "\n".join(out) + "\n"
