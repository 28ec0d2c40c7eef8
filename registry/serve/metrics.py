"""The service's Prometheus metrics, in a registry of its own per app (two apps in one process count apart):
requests by route and status, errors, request latency, encode batch sizes and times, queue depth, live streams."""
from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """The counters, histograms and gauges of one service."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, queue_depth: Callable[[], int], streams: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("vpr_requests", "HTTP requests answered", ["route", "status"], registry=r)
        self.errors = Counter("vpr_errors", "HTTP requests answered with a 4xx or 5xx status", ["route", "status"],
                              registry=r)
        self.latency = Histogram("vpr_request_seconds", "time to answer a request", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("vpr_batch_size", "images per encode call", buckets=BATCH_BUCKETS, registry=r)
        self.encode_seconds = Histogram("vpr_encode_seconds", "time of one batched encode call",
                                        buckets=LATENCY_BUCKETS, registry=r)
        self.images = Counter("vpr_images_localized", "query images encoded", registry=r)
        self.queue = Gauge("vpr_queue_depth", "images waiting to be encoded", registry=r)
        self.queue.set_function(queue_depth)
        self.streams = Gauge("vpr_streams", "live frame streams", registry=r)
        self.streams.set_function(streams)
        self.map_version = Gauge("vpr_map_version", "version of the map being served", registry=r)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        if status >= 400:
            self.errors.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.encode_seconds.observe(seconds)
        self.images.inc(size)

    def render(self) -> bytes:
        return generate_latest(self.registry)
