"""Prometheus metrics for stages. One registry per stage instance, so tests and `run all`
(several stages in one process) do not collide on the global registry."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


@dataclass
class StageMetrics:
    stage: str
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        labels = ["stage"]
        self.consumed = Counter("lightbox_messages_consumed", "Messages read", labels, registry=self.registry)
        self.produced = Counter(
            "lightbox_messages_produced", "Messages written", ["stage", "topic"], registry=self.registry
        )
        self.failures = Counter(
            "lightbox_failures", "Handler failures by reason", ["stage", "reason"], registry=self.registry
        )
        self.retries = Counter("lightbox_retries", "Transient-error retries", labels, registry=self.registry)
        self.dead_lettered = Counter(
            "lightbox_dead_lettered", "Messages sent to the DLQ", labels, registry=self.registry
        )
        self.handler_seconds = Histogram(
            "lightbox_handler_seconds",
            "Handler time per message",
            labels,
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.batch_size = Histogram(
            "lightbox_batch_size",
            "Messages per consumed batch",
            labels,
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        )
        self.paused = Counter(
            "lightbox_partitions_paused",
            "Times the worker queue filled and partitions were paused",
            labels,
            registry=self.registry,
        )
        self.outages = Counter(
            "lightbox_outages",
            "Times a dependency outage (or the broker) held the stage's partitions paused",
            labels,
            registry=self.registry,
        )
        self.held = Gauge(
            "lightbox_partitions_held",
            "1 while the stage holds its partitions paused for an outage or a long batch",
            labels,
            registry=self.registry,
        )
        self.refused_outputs = Counter(
            "lightbox_refused_outputs",
            "Outputs too large or refused by the broker (their inputs were dead-lettered)",
            labels,
            registry=self.registry,
        )
        self.offloaded_letters = Counter(
            "lightbox_offloaded_dead_letters",
            "Dead letters whose original was stored in object storage (too large to carry)",
            labels,
            registry=self.registry,
        )
        self.offset_resets = Counter(
            "lightbox_offset_resets",
            "Times the consumer resumed past retention (messages deleted before it read them)",
            labels,
            registry=self.registry,
        )
        self.lag = Gauge(
            "lightbox_consumer_lag",
            "High watermark minus position",
            ["stage", "partition"],
            registry=self.registry,
        )

        # Series exist from the start (at zero), so dashboards and rate() see a stage before its
        # first message.
        for metric in (
            self.consumed,
            self.retries,
            self.dead_lettered,
            self.handler_seconds,
            self.batch_size,
            self.paused,
            self.outages,
            self.held,
            self.refused_outputs,
            self.offloaded_letters,
            self.offset_resets,
        ):
            metric.labels(self.stage)

    def serve(self, port: int) -> None:
        if port:
            start_http_server(port, registry=self.registry)
