"""Prometheus metrics of the listener.

With several uvicorn workers, `serve-webhooks` points PROMETHEUS_MULTIPROC_DIR at a fresh
directory before the workers start; prometheus_client then keeps each worker's figures in a
file there and `/metrics` adds them up, so any worker answers with the totals.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram, disable_created_metrics

        disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created: noise

        self.callbacks = Counter(
            "orderpay_callbacks_total", "Payment callbacks by source and outcome.",
            ["source", "outcome"],
        )  # fmt: skip
        self.charges = Counter(
            "orderpay_charges_total", "Charges through the REST API by outcome.", ["outcome"]
        )
        self.latency = Histogram(
            "orderpay_http_request_duration_seconds",
            "HTTP request latency by route and method.",
            ["route", "method"],
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if os.environ.get(MULTIPROC_ENV):
            from prometheus_client import multiprocess

            registry: Any = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        else:
            from prometheus_client import REGISTRY

            registry = REGISTRY
        return generate_latest(registry), CONTENT_TYPE_LATEST


@cache
def metrics() -> Metrics:
    """One set of metrics per process (prometheus_client refuses duplicate names)."""
    return Metrics()
