"""Configuration: one typed object, read from defaults, an optional YAML file and the environment.

Precedence, highest first: environment variables (``LIGHTBOX_`` prefix, ``__`` between levels,
e.g. ``LIGHTBOX_KAFKA__BOOTSTRAP``), the YAML file named by ``LIGHTBOX_CONFIG`` (or ``--config``),
then the defaults below. Nothing else is global: components receive the settings they need.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


def _default_home() -> Path:
    return Path(os.environ.get("LIGHTBOX_HOME", Path.home() / ".lightbox"))


class KafkaSettings(BaseModel):
    bootstrap: str = "127.0.0.1:19092"
    controller_port: int = 19093
    topic_prefix: str = ""
    partitions: int = 3
    replication_factor: int = 1
    # Pinned broker release (a 4.x: KRaft only, the new group protocol and share groups); see
    # docs/decisions.md for why the 3.9 pin was dropped.
    version: str = "4.4.0"
    scala_version: str = "2.13"
    # Stage outputs, events, dead letters and the input offsets commit in one Kafka transaction
    # per batch (docs/reliability.md, docs/decisions.md). Off: at least once, offsets committed
    # after delivery, a killed stage's outputs produced again on restart.
    exactly_once: bool = True
    # This process's copy of its stage (the supervisor sets it: publish-0, publish-1, ...). It
    # makes the transactional.id stable across restarts, so a restart aborts the transaction its
    # killed predecessor left open at once. Empty: host, pid and a random part (unique, but a
    # killed copy's open transaction then blocks read_committed readers until
    # transaction_timeout_ms).
    instance: str = ""
    transaction_timeout_ms: int = 60_000
    # The consumer group protocol every stage's consumer uses: "consumer" is KIP-848's (the broker
    # assigns partitions and a copy joining or leaving moves only the partitions that change
    # hands, with no group-wide stop); "classic" is the old join/sync one. With "consumer" the
    # session timeout and heartbeat are the broker's (group.consumer.*), not the client's.
    group_protocol: Literal["classic", "consumer"] = "consumer"
    # How long an idle consumer's fetch waits at the broker for new records (librdkafka's
    # default): the broker answers as soon as a committed record arrives, so this sets how often
    # an idle stage asks, not how late it sees a record (docs/benchmarks.md).
    fetch_wait_max_ms: int = 500


class StorageSettings(BaseModel):
    endpoint: str = "127.0.0.1:19000"
    console_port: int = 19001
    access_key: str = "lightbox"
    secret_key: str = "lightbox-secret"
    bucket: str = "lightbox"
    secure: bool = False
    # MinIO's release tags are not semver; the Go proxy serves this pseudo-version.
    minio_version: str = "v0.0.0-20260212201848-7aac2a2c5b7c"
    # The local MinIO's background scanner (MINIO_SCANNER_SPEED). At MinIO's "default" it walks the
    # drive every minute: about 2 CPU-seconds a minute on this stack's bucket, in bursts that land
    # in whatever runs beside it. A one-drive dev stack has no parity to heal and sets no
    # lifecycle rules, so "slowest" (a cycle every 30 minutes) loses nothing: docs/decisions.md.
    minio_scanner_speed: Literal["fastest", "fast", "default", "slow", "slowest"] = "slowest"


class RegistrySettings(BaseModel):
    """The schema registry (Apicurio Registry 3.x; clients use its Confluent-compatible API)."""

    # What serializers, ClickHouse's AvroConfluent format and `lightbox schemas` talk to (Debian's
    # kcat lacks Avro support: docs/decisions.md). The local stack serves it on the host and port
    # of this URL, which must be loopback.
    url: str = "http://127.0.0.1:18081/apis/ccompat/v7"
    # The rule set on every subject the tooling registers (a Confluent compatibility level).
    compatibility: Literal[
        "BACKWARD",
        "BACKWARD_TRANSITIVE",
        "FORWARD",
        "FORWARD_TRANSITIVE",
        "FULL",
        "FULL_TRANSITIVE",
        "NONE",
    ] = "BACKWARD"
    # A JDK or JRE of 21+ (its home, or its bin/java); empty: JAVA_HOME, then /usr/lib/jvm/*.
    java_home: str = ""
    # Pinned io.apicurio:apicurio-registry-app release (Maven Central, the `all` tar.gz).
    version: str = "3.3.3"
    # The registry's health and metrics interface (Quarkus management port), loopback too.
    management_port: int = 18082
    # KafkaSQL storage: the registry's state lives in these topics of the stack's Kafka.
    journal_topic: str = "kafkasql-journal"
    snapshots_topic: str = "kafkasql-snapshots"
    # Per HTTP request to the registry; the serdes call it only for ids they have not seen.
    timeout_s: float = 5.0


class ClickHouseSettings(BaseModel):
    # Empty means the embedded engine (chDB) under the data dir; an http(s):// URL means a server.
    url: str = ""
    database: str = "lightbox"
    # Events older than this are dropped by ClickHouse (0: kept for ever).
    ttl_days: int = 0
    # Embedded engine's directory; empty: <home>/data/clickhouse.
    embedded_path: str = ""
    # Where the event-log sink, which owns the embedded engine, answers queries.
    query_port: int = 18123
    # Analyst SQL (`lightbox sql`, the sink's /query) runs on connections of its own, apart from
    # the sink's inserts, under these limits; the engine enforces them (readonly session).
    analyst_max_execution_s: float = 20.0  # below the reader's 30 s HTTP timeout
    analyst_max_result_rows: int = 100_000
    analyst_max_result_bytes: int = 64 * 1024 * 1024
    analyst_max_memory_bytes: int = 1024 * 1024 * 1024
    analyst_max_threads: int = 0  # 0: the engine's default
    # Analyst queries running at once; past this a query is refused (busy), never queued behind.
    analyst_concurrency: int = 2
    analyst_max_query_chars: int = 64 * 1024
    # The sink inserts up to this many events at once (whatever is already fetched, after
    # waiting at most stage.batch_timeout_s for the first): ClickHouse wants few large inserts,
    # and the stages' batch of 32 caps ingest at a few thousand events/s (docs/benchmarks.md).
    sink_batch_size: int = Field(default=20_000, ge=1)
    # ... and after the first, waits this long for more: each insert also folds its events into
    # the per-job facts and generations (processors/eventlog/job_facts.py), a fixed cost of about
    # 40 ms of CPU an insert however few its rows, so events arriving all the time become about
    # one insert a second (ClickHouse's own advice) instead of one per stage batch. Events reach
    # the log at most this much later.
    sink_linger_s: float = Field(default=1.0, ge=0)


class ReferenceSettings(BaseModel):
    """The reference downloader's limits (processors/references/url_policy.py FetchPolicy)."""

    # Hosts admitted even though they resolve to private or loopback addresses. Empty in
    # production; the demo and tests serve their images on loopback and name it here.
    allow_hosts: list[str] = []
    connect_timeout_s: float = 5.0
    total_timeout_s: float = 20.0
    max_bytes: int = 20 * 1024 * 1024
    max_redirects: int = 3
    max_pixels: int = 40_000_000
    per_host_concurrency: int = 4
    # Retryable failures (timeouts, 5xx, refused connections) are retried with backoff for this
    # long after the first one, then the reference is dropped (a required one fails the job).
    # Kept under Kafka's max.poll.interval.ms (300 s) less one attempt's total_timeout_s: the
    # references stage refuses to start otherwise.
    retry_window_s: float = 180.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    # At most this many retries within the window; None: as many as the window allows.
    retries: int | None = None
    # Downloads in flight at once in one references process (every job of a batch together).
    max_concurrent_downloads: int = 8
    # Decoded pixels in memory at once (proof decodes and mask decodes); one image larger than
    # this still decodes, alone.
    decode_budget_bytes: int = 512 * 1024 * 1024
    # Decoded product images and masks kept by processors.references.images (quality, generate).
    decoded_cache_bytes: int = 256 * 1024 * 1024
    # A product reference whose product region covers less of the frame than this is refused
    # (product_not_visible), as is one that is fully transparent or one colour, and one whose
    # mask separates nothing while less than this of the frame differs from its background.
    min_product_coverage: float = 0.01
    # A URL fetched within this long is answered from storage, with no network call.
    cache_ttl_s: float = 86400.0
    # Local path of a segmentation model for product masks; empty: the classical segmenter.
    segmenter_path: str = ""


class RoutingSettings(BaseModel):
    # Empty: the rules shipped in processors/routing/rules.yaml.
    rules_file: str = ""


class StageSettings(BaseModel):
    batch_size: int = 32
    batch_timeout_s: float = 0.2
    # After a batch's first record, how long to wait for more before handling it. 0: take only
    # what is already fetched, so a quiet pipeline's records never wait. The event-log sink sets
    # it from clickhouse.sink_linger_s (ClickHouse wants about one insert a second, not many).
    batch_linger_s: float = 0.0
    max_attempts: int = 4
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 5.0
    metrics_port: int = 0  # 0: no HTTP endpoint; metrics still collected
    session_timeout_ms: int = 10000
    # The producer's message.max.bytes. Every output, event and dead letter is checked against it
    # (and the broker's max.message.bytes of its topic) before it is produced.
    max_message_bytes: int = 1_000_000
    # A batch still in hand after this long pauses the stage's partitions and keeps polling, so
    # the group's max.poll.interval never runs out however long a dependency takes.
    keepalive_after_s: float = 20.0
    # While a dependency is down: a `retry` event per waiting job on the first failure, then at
    # most this often.
    outage_event_interval_s: float = 60.0
    # How long a batch's produce waits for the broker's acknowledgements before the stage treats
    # the broker as down (pauses, and waits on).
    delivery_timeout_s: float = 30.0


class DlqSettings(BaseModel):
    """The dead-letter tool (gateway/ops/dlq.py; docs/reliability.md)."""

    # A letter replayed this many times that failed again is parked: `dlq replay` skips it.
    max_replays: int = 3
    # Letters per produce and per replay-ledger object: a crash mid-replay redoes at most this many.
    replay_chunk: int = 500


class QualitySettings(BaseModel):
    # Generation attempts per job before the gate gives up (1 = no automatic retry).
    max_attempts: int = 3
    min_preservation: float = 0.6
    max_blank_score: float = 0.97
    # Product region (solid product pixels of the stored reference, as a fraction of its frame)
    # below which preservation is not scored but failed as product_missing. Looser than
    # references.min_product_coverage: the solid core is a little smaller than the soft mask.
    min_product_coverage: float = 0.005
    max_pixels: int = 40_000_000
    # What happens to a job still below threshold after its last attempt.
    on_exhausted: Literal["review", "fail"] = "review"
    # Prompt adherence with open_clip, from a local checkpoint; empty: not scored. CLIP cosines
    # are model-specific (matching pairs often score only 0.25-0.35): calibrate per model.
    clip_model: str = ""
    clip_checkpoint: str = ""
    min_clip_score: float = 0.2
    # OCR (Tesseract) for jobs that carry a text overlay.
    ocr_for_text: bool = True
    min_ocr_score: float = 0.6


class ReviewSettings(BaseModel):
    policy: Literal["auto", "hold"] = "auto"
    publish_prefix: str = "published/"
    webhook_url: str = ""
    # Notifications go out from an outbox in storage, apart from publishing (publish.py):
    # per POST; between tries of one delivery (capped exponential); how long one is tried before
    # it is given up (notify_failed); how often due ones are looked for; and after how long
    # without a try an entry of another (dead) publish process is taken over.
    notify_timeout_s: float = 10.0
    notify_backoff_initial_s: float = 1.0
    notify_backoff_max_s: float = 60.0
    notify_give_up_after_s: float = 86400.0
    notify_poll_s: float = 0.5
    notify_adopt_after_s: float = 300.0
    # What a reviewer may send (CLI `lightbox review` and the HTTP review route check these at
    # entry): a decision record has to fit in one Kafka message with room for the job beside it.
    max_reason_chars: int = 2000
    max_reviewer_chars: int = 200


class IntakeSettings(BaseModel):
    """Intake's de-duplication table (processors/state/seen_table.py) and its changelog."""

    # An entry not written for this long is forgotten in memory and tombstoned on the changelog,
    # so both stay bounded. It is also how long intake remembers an event id, a slot's content
    # and its newest event time: see docs/intake.md for what forgetting means.
    dedup_ttl_s: float = 30 * 86400.0
    # How often expired entries are swept out while the stage runs (they are skipped on restore).
    sweep_interval_s: float = 600.0
    # A restore must finish within floor + per_record x the records it has to read, then it fails
    # loudly rather than serve with a partial table. 0.5 ms a record allows 2,000 records/s.
    restore_floor_s: float = 60.0
    restore_per_record_s: float = 0.0005
    # Seconds between restore progress log lines.
    restore_progress_s: float = 5.0


class SupervisorSettings(BaseModel):
    """`lightbox run all` (deploy/local/supervisor.py): how a stage that dies is restarted."""

    # A stage that dies again soon after a restart waits initial, 2x, 4x ... up to max before the
    # next start (processors/backoff.py); a run that lasted healthy_after_s resets the wait.
    restart_initial_s: float = 1.0
    restart_max_s: float = 60.0
    # A process counts as started once it logs that it started, or once it has lived this long.
    healthy_after_s: float = 10.0
    # A stage that never started fails this many times in a row: a configuration error, and
    # `run all` stops with its log tail.
    first_start_attempts: int = 3
    # Processes per stage, by stage name (`run all --copies stage=N,...` adds to it; a plain
    # `--copies N` replaces it): the heavy stages take more processes, in one consumer group.
    # Stages not named run once; a singleton (eventlog) always runs once.
    # Checked where the stage names are known (deploy/local/supervisor.check_copies): an unknown
    # stage, a count under 1 or a second singleton stops `run all` before anything starts.
    copies: dict[str, int] = {}


class GenerationSettings(BaseModel):
    # YAML model registry (gpu_workers/registry.py); empty: only the CPU compositor is available.
    models_file: str = ""
    remote_endpoint: str = ""
    remote_api_key: str = ""
    max_batch: int = 8
    # Batches the worker fetches ahead; when that many wait, it pauses its partitions.
    queue_batches: int = 2
    # How the generate stage reads generation.requests: "group", a consumer group (a partition
    # per worker at most, offsets committed in the batch's transaction: exactly once); "share",
    # a Kafka share group (KIP-932: any number of workers per partition, each record acknowledged
    # on its own once its outputs are delivered; at least once, see docs/reliability.md). Share
    # needs a broker with share.version >= 1 (the local stack's 4.4 has it).
    consumption: Literal["group", "share"] = "group"
    # Share mode: a record handed over this many times (its workers died, or it was released)
    # is dead-lettered instead of generated again. Below the broker's
    # group.share.delivery.count.limit (5 by default), which would otherwise archive it silently.
    share_max_deliveries: int = Field(default=3, ge=1, le=9)  # the broker allows a limit of 10
    # Share mode: how long a worker holds the records of a poll (the group's
    # share.record.lock.duration.ms). A poll brings at most max_batch records; they must be
    # generated and delivered within this, or another worker gets them too. The local stack and
    # compose allow up to an hour (group.share.max.record.lock.duration.ms).
    share_lock_s: float = Field(default=120.0, ge=1.0, le=3600.0)


class ProvenanceSettings(BaseModel):
    """Content credentials on published files (processors/provenance/, docs/provenance.md)."""

    # Off: published files carry the XMP digital source type but no C2PA manifest.
    sign: bool = True
    # The signing certificate chain (PEM, signer first, then intermediates) and its private key.
    # Empty: the local TEST chain under <home>/keys/, made by `lightbox keys init` (or on first
    # use), which no one outside this machine trusts.
    cert_path: str = ""
    key_path: str = ""
    alg: Literal["ES256", "ES384", "PS256"] = "ES256"
    # RFC 3161 timestamp authority; empty: no timestamp (the signature is then only as good as
    # the certificate's validity window at verification time).
    tsa_url: str = ""
    # PEM bundle of root certificates `lightbox verify` trusts; empty: the local test CA, if any.
    trust_anchors_path: str = ""
    # The prompt text is the brand's creative brief: kept out of published files unless asked.
    include_prompt: bool = False


class ChannelSettings(BaseModel):
    """Channel presets and their marketplace rules (processors/channels/)."""

    # YAML of presets; empty: the packaged processors/channels/presets.yaml.
    presets_file: str = ""


class GatewaySettings(BaseModel):
    """`lightbox serve` (gateway/web): who may reach it, how it is served, and its API's limits."""

    # API tokens (hashed, mode 0600; `lightbox tokens`); empty: <home>/gateway/tokens.json. A file
    # and not object storage: every stage holds the storage credentials, and none may mint a token.
    tokens_file: str = ""
    # The key that signs session cookies and CSRF tokens (made on first use, mode 0600); empty:
    # <home>/gateway/session.key. Replicas behind one name must share it.
    session_key_file: str = ""
    session_ttl_s: float = 8 * 3600.0
    # Host names (exact, or ".example.com" for it and its subdomains) the gateway answers besides
    # loopback and the address it is bound to: the DNS-rebinding defence on every bind address.
    # Off loopback, `serve` refuses to start while this is empty.
    allowed_hosts: list[str] = []
    # TLS served by the gateway itself (PEM files). Off loopback one of these or behind_proxy
    # (`serve --behind-proxy`: a proxy in front terminates TLS) is required.
    tls_cert: str = ""
    tls_key: str = ""
    behind_proxy: bool = False
    # Presigned asset URLs in GET /v1/jobs/{id}: how long they work, and the host:port (and
    # scheme) clients reach storage by; empty: storage.endpoint as the gateway reaches it.
    asset_url_ttl_s: int = 900
    asset_url_endpoint: str = ""
    asset_url_secure: bool = False
    # How long an Idempotency-Key of POST /v1/requests is remembered.
    idempotency_ttl_s: float = 86400.0
    # Threads (each with its own ClickHouse connection, made once) for event-log reads when
    # clickhouse.url names a server; queries never run on the event loop.
    eventlog_threads: int = 4
    # Per dependency, for /readyz.
    readiness_timeout_s: float = 3.0
    # How long one round of readiness checks answers /readyz (rounds never overlap either).
    readiness_cache_s: float = 1.0


class WebhookEndpoint(BaseModel):
    url: str
    # Standard Webhooks secret ("whsec_" + base64 of 24-64 random bytes); empty: sent unsigned.
    secret: str = ""


class WebhookSettings(BaseModel):
    """Completion notifications, signed the Standard Webhooks way (processors/webhooks.py).

    Where a job's notification goes, first match wins: the request's own webhook_url (catalog
    event v3; its host must be in allowed_hosts), the endpoint of its source (the upstream
    system named in the event's `source`), then review.webhook_url, the catch-all."""

    sources: dict[str, WebhookEndpoint] = {}
    # Signs notifications to review.webhook_url, and to a request's own URL when its source has
    # no endpoint (with a secret) of its own.
    secret: str = ""
    # Hosts ("host" or "host:port") a request may name in its own webhook_url. Empty: none may.
    allowed_hosts: list[str] = []


class BackendPrice(BaseModel):
    """What one generation backend costs (generate records the seconds and calls it used)."""

    gpu_second: float = 0.0
    cpu_second: float = 0.0
    api_call: float = 0.0


class CostSettings(BaseModel):
    """The cost model behind `lightbox metrics`' cost per delivered image (docs/analytics.md).
    Defaults are list prices of the order of a rented datacentre GPU (about 3 an hour), a vCPU
    (about 0.04 an hour) and a hosted image API (0.04 a call): set your own."""

    currency: str = "USD"
    backends: dict[str, BackendPrice] = {
        "diffusers": BackendPrice(gpu_second=0.00083, cpu_second=0.000011),
        "compositor": BackendPrice(cpu_second=0.000011),
        "remote": BackendPrice(api_call=0.04),
    }


class CreditAccount(BaseModel):
    """One credit account: a budget and the requests it covers (processors/credits/)."""

    # Credits this account may commit: reserved and not released (consumed counts).
    budget: float
    # Requests whose campaign is listed here are charged to this account; else those whose
    # source (the upstream system) is listed. A campaign match wins over a source match.
    campaigns: list[str] = []
    sources: list[str] = []


class CreditSettings(BaseModel):
    """Credit budgets (docs/decisions.md, "Credits"). A request no account covers is not
    budgeted. A job costs template_costs[its template], else default_job_cost."""

    accounts: dict[str, CreditAccount] = {}
    default_job_cost: float = 1.0
    template_costs: dict[str, float] = {}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LIGHTBOX_", env_nested_delimiter="__", extra="ignore")

    home: Path = Field(default_factory=_default_home)
    kafka: KafkaSettings = KafkaSettings()
    storage: StorageSettings = StorageSettings()
    registry: RegistrySettings = RegistrySettings()
    clickhouse: ClickHouseSettings = ClickHouseSettings()
    stage: StageSettings = StageSettings()
    dlq: DlqSettings = DlqSettings()
    references: ReferenceSettings = ReferenceSettings()
    routing: RoutingSettings = RoutingSettings()
    quality: QualitySettings = QualitySettings()
    review: ReviewSettings = ReviewSettings()
    generation: GenerationSettings = GenerationSettings()
    supervisor: SupervisorSettings = SupervisorSettings()
    intake: IntakeSettings = IntakeSettings()
    provenance: ProvenanceSettings = ProvenanceSettings()
    channels: ChannelSettings = ChannelSettings()
    gateway: GatewaySettings = GatewaySettings()
    webhooks: WebhookSettings = WebhookSettings()
    costs: CostSettings = CostSettings()
    credits: CreditSettings = CreditSettings()
    log_level: str = "INFO"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSource(settings_cls))

    @property
    def cache_dir(self) -> Path:
        """Downloaded and built tools (Kafka jars, MinIO binary): kept across stack restarts."""
        return self.home / "cache"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def clickhouse_dsn(self) -> str:
        if self.clickhouse.url:
            return self.clickhouse.url
        return f"chdb://{self.clickhouse.embedded_path or self.data_dir / 'clickhouse'}"

    @property
    def uses_embedded_clickhouse(self) -> bool:
        return not self.clickhouse.url


class _YamlSource(PydanticBaseSettingsSource):
    """Reads the YAML file named by LIGHTBOX_CONFIG, if any."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("LIGHTBOX_CONFIG")
        if not path:
            return {}
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"LIGHTBOX_CONFIG names {file}, which does not exist")
        data = yaml.safe_load(file.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{file}: the top level must be a mapping of settings")
        return data


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    if config_file:
        os.environ["LIGHTBOX_CONFIG"] = str(config_file)
    return Settings(**overrides)
