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
    # Pinned broker line; see docs/decisions.md for why 3.9 and not 4.x.
    version: str = "3.9.1"
    scala_version: str = "2.13"


class StorageSettings(BaseModel):
    endpoint: str = "127.0.0.1:19000"
    console_port: int = 19001
    access_key: str = "lightbox"
    secret_key: str = "lightbox-secret"
    bucket: str = "lightbox"
    secure: bool = False
    # MinIO's release tags are not semver; the Go proxy serves this pseudo-version.
    minio_version: str = "v0.0.0-20260212201848-7aac2a2c5b7c"


class ClickHouseSettings(BaseModel):
    # Empty means the embedded engine (chDB) under the data dir; an http(s):// URL means a server.
    url: str = ""
    database: str = "lightbox"
    # Embedded engine's directory; empty: <home>/data/clickhouse.
    embedded_path: str = ""
    # Where the event-log sink, which owns the embedded engine, answers queries.
    query_port: int = 18123


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
    retries: int = 3
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
    max_attempts: int = 4
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 5.0
    metrics_port: int = 0  # 0: no HTTP endpoint; metrics still collected
    session_timeout_ms: int = 10000


class QualitySettings(BaseModel):
    # Generation attempts per job before the gate gives up (1 = no automatic retry).
    max_attempts: int = 3
    min_preservation: float = 0.6
    max_blank_score: float = 0.97
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


class GenerationSettings(BaseModel):
    # YAML model registry (gpu_workers/registry.py); empty: only the CPU compositor is available.
    models_file: str = ""
    remote_endpoint: str = ""
    remote_api_key: str = ""
    max_batch: int = 8
    # Batches the worker fetches ahead; when that many wait, it pauses its partitions.
    queue_batches: int = 2


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LIGHTBOX_", env_nested_delimiter="__", extra="ignore")

    home: Path = Field(default_factory=_default_home)
    kafka: KafkaSettings = KafkaSettings()
    storage: StorageSettings = StorageSettings()
    clickhouse: ClickHouseSettings = ClickHouseSettings()
    stage: StageSettings = StageSettings()
    references: ReferenceSettings = ReferenceSettings()
    routing: RoutingSettings = RoutingSettings()
    quality: QualitySettings = QualitySettings()
    review: ReviewSettings = ReviewSettings()
    generation: GenerationSettings = GenerationSettings()
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
