"""What the HTTP app holds for its lifetime, under typed keys.

One Kafka producer, one registry serde and one event-log reader serve every request: a producer
per request would open a broker connection (and an idempotent-producer session) for each POST, a
serde per request look its schema id up again, and a reader per request open an HTTP session (or
ClickHouse connections) for each GET. They are opened when the app starts and closed, after the
queue has been flushed, when it stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import jinja2
from aiohttp import web
from confluent_kafka import Producer
from minio import Minio

from processors.config import Settings
from processors.eventlog.reader import EventLogReader
from processors.kafka_clients import make_producer
from processors.runtime.codec import Codec
from processors.storage import ObjectStore
from schemas.serde import AvroSerde
from schemas.topics import Topic

SETTINGS = web.AppKey("settings", Settings)
BOUND_HOST = web.AppKey("bound_host", str)
STORE = web.AppKey("store", ObjectStore)
JOB_SERDE = web.AppKey("job_serde", AvroSerde)
PAGES = web.AppKey("pages", jinja2.Environment)
PRODUCER = web.AppKey("producer", Producer)
EVENT_LOG = web.AppKey("event_log", EventLogReader)
# The catalog topic's registry serde: its schema id is looked up once, not per request.
CATALOG_SERDE = web.AppKey("catalog_serde", object)  # a processors.runtime.codec.TopicSerde
# Signs asset URLs (no network: the region is given, so the SDK never asks the server for it).
PRESIGNER = web.AppKey("presigner", Minio)

FLUSH_ON_STOP_S = 10.0
# MinIO's region unless one is configured; presigning needs one.
STORAGE_REGION = "us-east-1"


def presigner(settings: Settings) -> Minio:
    """A client for presigned GET URLs that name the storage host clients reach
    (gateway.asset_url_endpoint), which may differ from the one the gateway uses."""
    storage, gateway = settings.storage, settings.gateway
    endpoint = gateway.asset_url_endpoint or storage.endpoint
    secure = gateway.asset_url_secure if gateway.asset_url_endpoint else storage.secure
    return Minio(
        endpoint,
        access_key=storage.access_key,
        secret_key=storage.secret_key,
        secure=secure,
        region=STORAGE_REGION,
    )


async def kafka_and_event_log(app: web.Application) -> AsyncIterator[None]:
    """aiohttp cleanup context: the producer and the event-log reader, for the app's lifetime."""
    settings = app[SETTINGS]
    producer = make_producer(settings)
    reader = EventLogReader(settings)
    await reader.open()
    app[PRODUCER] = producer
    app[EVENT_LOG] = reader
    app[CATALOG_SERDE] = Codec.of(settings).serde(Topic.CATALOG_EVENTS)
    try:
        yield
    finally:
        await reader.close()
        # Every request waited for its own deliveries; this only drains what a request that was
        # cut off at shutdown left queued.
        await asyncio.to_thread(producer.flush, FLUSH_ON_STOP_S)
