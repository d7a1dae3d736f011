"""The event-log sink of the running pipeline: `lightbox sql` cannot read files, a long analyst
query stops at its limit with a clear error, and events keep landing (and jobs keep being
answered) while it runs."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from deploy.local.session import expected_job_ids
from gateway.cli.main import main
from processors.eventlog.reader import EventLogReader, QueryRefused
from tests.support.catalog import events_for

pytestmark = pytest.mark.integration


@pytest.fixture
def cli_env(pipeline: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI pointed at this session's pipeline, as a user's shell would be."""
    monkeypatch.setenv("LIGHTBOX_CLICKHOUSE__QUERY_PORT", str(pipeline.settings.clickhouse.query_port))
    monkeypatch.setenv("LIGHTBOX_KAFKA__TOPIC_PREFIX", pipeline.settings.kafka.topic_prefix)


def test_lightbox_sql_refuses_to_read_a_file(cli_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sql", "SELECT file('/etc/hostname')"]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("error: file may not be called here: functions that read files")
    assert captured.out == ""
    # An ordinary analyst query on the same endpoint still answers.
    assert main(["sql", "SELECT count() >= 0, 6 * 7 FROM lightbox.pipeline_events"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "1\t42"


def test_a_long_query_times_out_clearly_while_events_keep_landing(pipeline: Any, catalog_server: Any) -> None:
    reader = EventLogReader(pipeline.settings)
    limit_s = pipeline.settings.clickhouse.analyst_max_execution_s
    outcome: dict[str, Any] = {}

    def long_query() -> None:
        started = time.monotonic()
        try:
            asyncio.run(reader.sql("SELECT count() FROM system.numbers"))
        except QueryRefused as exc:
            outcome["error"] = str(exc)
        outcome["took_s"] = time.monotonic() - started

    (event,) = events_for(catalog_server, [4], "long-query")
    (job_id,) = expected_job_ids([event])
    query = threading.Thread(target=long_query)
    query.start()
    time.sleep(0.5)
    pipeline.submit([event])
    # The whole job runs through every stage, its events landing in ClickHouse and its state
    # read back, while the analyst query still runs on the same engine.
    assert pipeline.wait_for([job_id], timeout_s=limit_s - 2).get(job_id) == "published"
    assert query.is_alive(), "the job was published and read back before the long query ended"
    query.join(limit_s + 15)
    assert outcome["error"].startswith(f"timeout: the query ran past {limit_s:g}s")
    assert limit_s - 1 < outcome["took_s"] < limit_s + 10
    result = asyncio.run(
        reader.sql(f"SELECT count() FROM lightbox.pipeline_events WHERE job_id = '{job_id}'")
    )
    assert result["rows"][0][0] >= 7, "an event from every stage the job went through"
