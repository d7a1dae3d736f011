"""A pipeline of the browser tests' own: every stage under a fresh topic prefix, with review
policy "hold", so each asset it makes waits for a reviewer (the shared pipeline of
tests/conftest.py publishes automatically). Module-scoped: it stops once the browser tests are
done, instead of running beside the shared pipeline for the rest of the suite."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from deploy.local.session import PipelineSession, free_port
from processors.config import Settings


@pytest.fixture(scope="module")
def hold_pipeline(
    stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PipelineSession]:
    clickhouse_dir = tmp_path_factory.mktemp("clickhouse-browser")
    query_port = free_port()
    settings = stack_settings.model_copy(
        update={
            "clickhouse": stack_settings.clickhouse.model_copy(
                update={"embedded_path": str(clickhouse_dir), "query_port": query_port}
            ),
            "review": stack_settings.review.model_copy(update={"policy": "hold"}),
        }
    )
    env = {
        "LIGHTBOX_CLICKHOUSE__EMBEDDED_PATH": str(clickhouse_dir),
        "LIGHTBOX_CLICKHOUSE__QUERY_PORT": str(query_port),
        "LIGHTBOX_REVIEW__POLICY": "hold",
    }
    session = PipelineSession(settings, prefix=f"browser-{uuid.uuid4().hex[:8]}.", env=env)
    session.start(start_stack=False)
    yield session
    session.stop()
