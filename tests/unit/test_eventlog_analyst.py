"""Analyst SQL on the real embedded engine (chDB): one bounded read-only statement that reads only
the event log. The engine's readonly mode alone lets the scalar file() read any file; the
parse-level check refuses it, and every function that reaches files, URLs or other servers."""

from __future__ import annotations

import pytest

from processors.config import load_settings
from processors.eventlog.analyst import (
    AnalystLimits,
    AnalystQueryFailed,
    AnalystQueryRefused,
    analyst_query_problem,
    engine_table_functions,
    run_analyst_query,
)
from processors.eventlog.clickhouse import connect, connect_analyst


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    settings = load_settings()
    settings.clickhouse.embedded_path = str(tmp_path_factory.mktemp("chdb-analyst"))
    settings.clickhouse.analyst_max_execution_s = 1.5
    settings.clickhouse.analyst_max_result_rows = 1000
    settings.clickhouse.analyst_max_memory_bytes = 100 * 1024 * 1024
    return settings


@pytest.fixture(scope="module")
def engine(settings):
    # chDB hosts one engine per process: this module's clients all close at its end.
    writer = connect(settings)  # creates the table
    analyst = connect_analyst(settings)
    yield analyst
    analyst.close()
    writer.close()


@pytest.fixture(scope="module")
def run(engine, settings):
    limits = AnalystLimits.of(settings.clickhouse)
    table_functions = engine_table_functions(engine)

    def run(sql: str) -> dict:
        return run_analyst_query(engine, sql, limits, table_functions)

    return run


def test_readonly_alone_lets_the_scalar_file_function_read_a_file(engine, tmp_path) -> None:
    # What `lightbox sql "SELECT file(...)"` returned before the parse-level check: readonly=1
    # refuses the file *table* function, not the scalar one. This pins why the check exists.
    secret = tmp_path / "secret.txt"
    secret.write_text("the engine host's file")
    (value,) = engine.query(f"SELECT file('{secret}')").result_rows[0]
    assert value == "the engine host's file"


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT file('/etc/hostname')",
        "SELECT `file`('/etc/hostname')",
        "SELECT \"FILE\"('/etc/hostname')",
        "SELECT arrayMap(p -> file(p), ['/etc/hostname'])",
        "WITH (SELECT file('/etc/hostname')) AS f SELECT f",
        "SELECT * FROM (SELECT file('/etc/hostname') AS f) /* no file( here */",
        "EXPLAIN SYNTAX SELECT file('/etc/hostname')",
        "DESCRIBE TABLE url('http://127.0.0.1:1/x', CSV, 'a String')",
        "SELECT * FROM url('http://127.0.0.1:1/x', CSV, 'a String')",
        "SELECT * FROM s3('http://127.0.0.1:1/b/x.csv')",
        "SELECT * FROM hdfs('hdfs://127.0.0.1:1/x', CSV, 'a String')",
        "SELECT * FROM remote('127.0.0.1:1', system.one)",
        "SELECT * FROM remoteSecure('127.0.0.1:1', system.one)",
        "SELECT * FROM cluster('default', system.one)",
        "SELECT * FROM mysql('127.0.0.1:1', 'd', 't', 'u', 'p')",
        "SELECT * FROM postgresql('127.0.0.1:1', 'd', 't', 'u', 'p')",
        "SELECT * FROM jdbc('jdbc:x', 't')",
        "SELECT * FROM odbc('DSN=x', 't')",
        "SELECT * FROM sqlite('/tmp/x.db', 't')",
        "SELECT * FROM mongodb('127.0.0.1:1', 'd', 'c', 'u', 'p', 'x String')",
        "SELECT * FROM redis('127.0.0.1:1', 'k', 'k String')",
        "SELECT * FROM input('a String')",
        "SELECT * FROM azureBlobStorage('http://127.0.0.1:1', 'c', 'b')",
        "SELECT * FROM executable('ls', TSV, 'a String')",
        "SELECT * FROM python(x)",
        "SELECT * FROM filesystem('/etc')",
        "SELECT * FROM icebergLocal('/tmp/x')",
    ],
)
def test_functions_that_reach_files_urls_or_servers_are_refused(run, sql: str) -> None:
    with pytest.raises(AnalystQueryRefused, match="may not be called here"):
        run(sql)


def test_the_refusal_names_the_function(run) -> None:
    with pytest.raises(AnalystQueryRefused, match=r"^file may not be called here: functions that read files"):
        run("SELECT file('/etc/hostname')")


def test_event_log_queries_still_run(run) -> None:
    assert run("SELECT count() FROM lightbox.pipeline_events")["rows"] == [[0]]
    assert run("SELECT number FROM numbers(3)")["rows"] == [[0], [1], [2]]
    assert ["pipeline_events"] in run("SHOW TABLES FROM lightbox")["rows"]
    assert run("DESCRIBE TABLE lightbox.pipeline_events")["rows"][0][0] == "event_id"
    assert run("EXPLAIN SELECT count() FROM lightbox.pipeline_events")["rows"]
    # A word in a string or a comment is not a call.
    assert run("SELECT 'file(' AS s /* url( */")["rows"] == [["file("]]


def test_a_long_query_stops_at_max_execution_time_with_a_clear_error(run) -> None:
    with pytest.raises(AnalystQueryFailed, match=r"^timeout: the query ran past 1.5s") as caught:
        run("SELECT count() FROM system.numbers")
    assert caught.value.limit == "max_execution_time"


def test_a_query_cannot_lift_the_limits(run) -> None:
    with pytest.raises(AnalystQueryFailed, match="readonly"):
        run("SELECT count() FROM system.numbers SETTINGS max_execution_time = 0")
    # Nor from a subquery: it still stops at the session's limit.
    with pytest.raises(AnalystQueryFailed, match="timeout"):
        run("SELECT * FROM (SELECT count() FROM system.numbers SETTINGS max_execution_time = 0)")


def test_result_rows_and_memory_are_bounded(run) -> None:
    with pytest.raises(AnalystQueryFailed, match="larger than 1000 rows") as caught:
        run("SELECT number FROM numbers(5000)")
    assert caught.value.limit == "max_result_rows"
    with pytest.raises(AnalystQueryFailed, match="more than 104857600 bytes of memory"):
        run("SELECT length(groupArray(number)) FROM numbers(100000000)")


def test_writes_are_refused_by_the_engine_too(engine, settings) -> None:
    # Past the text check (which refuses INSERT first), the session itself is read-only.
    with pytest.raises(Exception, match="readonly"):
        engine.command("INSERT INTO lightbox.pipeline_events (event_id) VALUES ('x')")
    with pytest.raises(Exception, match="readonly"):
        engine.command("SET readonly = 0")


@pytest.mark.parametrize(
    ("sql", "allowed"),
    [
        ("SELECT count() FROM lightbox.pipeline_events", True),
        ("  with x as (select 1) select * from x", True),
        ("DESC lightbox.pipeline_events", True),
        ("SELECT 1; DROP TABLE lightbox.pipeline_events", False),
        ("INSERT INTO lightbox.pipeline_events VALUES (1)", False),
        ("SELECT 1 INTO OUTFILE '/tmp/x'", False),
        ("select 1 into\n outfile '/tmp/x'", False),
        ("SELECT 1 INTO/**/OUTFILE '/tmp/x'", False),
        ("SELECT 1 INTO--\nOUTFILE '/tmp/x'", False),
        ("SELECT 1 INTO#\nOUTFILE '/tmp/x'", False),
        ("select 1 InTo OuTfIlE '/tmp/x'", False),
        ("SELECT 1 INTO/* x */OUTFILE '/tmp/x' AND STDOUT", False),
        ("SELECT 'outfile' AS word", False),  # refused wherever it appears, strings included
        ("SELECT 1 -- outfile", False),
        ("SELECT * FROM t FROM INFILE '/etc/passwd'", False),
        ("SELECT '" + "x" * 70_000 + "'", False),  # over analyst_max_query_chars
    ],
)
def test_analyst_sql_is_one_short_read_only_statement(sql: str, allowed: bool) -> None:
    assert (analyst_query_problem(sql) is None) is allowed


def test_the_length_refusal_names_the_limit() -> None:
    problem = analyst_query_problem("SELECT 1" + " " * 100, max_chars=50)
    assert problem is not None and "at most 50 (clickhouse.analyst_max_query_chars)" in problem


async def test_a_direct_reader_names_an_unreachable_server() -> None:
    from deploy.local.session import free_port
    from processors.eventlog.reader import EventLogReader, EventLogUnavailable

    settings = load_settings()
    settings.clickhouse.url = f"http://127.0.0.1:{free_port()}"
    reader = EventLogReader(settings)
    for call in (reader.sql("SELECT 1"), reader.states(["a"]), reader.timeline("a")):
        with pytest.raises(EventLogUnavailable, match=r"cannot reach ClickHouse at http://127\.0\.0\.1:"):
            await call
