"""Prometheus metrics of the listener.

With several uvicorn workers, `serve-webhooks` points PROMETHEUS_MULTIPROC_DIR at a fresh
directory before the workers start; prometheus_client then keeps each worker's figures in a
file there and `/metrics` adds them up, so any worker answers with the totals.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import cache
from typing import Any

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Why the listener closed or refused a connection (http/shedding.py).
SHED_REASONS = ("head_timeout", "body_timeout", "idle_timeout", "over_capacity")


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram, disable_created_metrics

        disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created: noise

        self.callbacks = Counter(
            "orderpay_callbacks_total",
            "Payment callbacks by source and outcome.",
            ["source", "outcome"],
        )
        self.charges = Counter(
            "orderpay_charges_total", "Charges through the REST API by outcome.", ["outcome"]
        )
        self.shed = Counter(
            "orderpay_listener_shed_connections_total",
            "Connections the listener closed or refused: no request head in time, a body not "
            "in time (408), idle after a response, or over its cap (503 or the oldest idle one).",
            ["reason"],
        )
        for reason in SHED_REASONS:
            self.shed.labels(reason)  # every reason shows, at 0 until it happens
        self.latency = Histogram(
            "orderpay_http_request_duration_seconds",
            "HTTP request latency by route and method.",
            ["route", "method"],
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )

    def render(
        self, *, review_items_open: int | None = None, oldest_awaiting_seconds: float | None = None
    ) -> tuple[bytes, str]:
        """The exposition text. `review_items_open` and `oldest_awaiting_seconds`: read from the
        database at scrape time by the caller (the same in every worker, so no per-process
        figure); None leaves the gauges out, as when the database cannot say."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if os.environ.get(MULTIPROC_ENV):
            from prometheus_client import multiprocess

            registry: Any = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        else:
            from prometheus_client import REGISTRY

            registry = REGISTRY
        body = generate_latest(registry)
        if review_items_open is not None:
            body += generate_latest(_ScrapeTime(review_items_open, oldest_awaiting_seconds or 0))
        return body, CONTENT_TYPE_LATEST


class _ScrapeTime:
    """Figures read at scrape time, served beside the process's own."""

    def __init__(self, review_items_open: int, oldest_awaiting_seconds: float) -> None:
        self.review_items_open = review_items_open
        self.oldest_awaiting_seconds = oldest_awaiting_seconds

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        yield GaugeMetricFamily(
            "orderpay_review_items_open",
            "Review items waiting for an operator's decision (orderpay review list).",
            value=self.review_items_open,
        )
        yield GaugeMetricFamily(
            "orderpay_oldest_awaiting_answer_seconds",
            "Age of the oldest payment or refund still awaiting its provider's final word "
            "(0: none); the worker keeps asking about it.",
            value=self.oldest_awaiting_seconds,
        )


@cache
def metrics() -> Metrics:
    """One set of metrics per process (prometheus_client refuses duplicate names)."""
    return Metrics()
