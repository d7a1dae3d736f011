"""What an analyst's SQL may be, and how it runs: one read-only statement, bounded, reading only
the event log.

Applied wherever analyst SQL runs: the sink's query endpoint (server.py) and the reader when it
talks to a ClickHouse server directly (reader.py). Three layers, each closing what the one before
leaves open:

1. Text (analyst_query_problem): one statement of a read-only kind, at most
   `analyst_max_query_chars`, and neither OUTFILE nor INFILE anywhere. readonly=1 still lets
   `INTO OUTFILE` write a file on the engine's host, and matching "INTO OUTFILE" is beaten by a
   comment between the words (INTO/**/OUTFILE), so the words are refused wherever they appear,
   in comments and string literals too: analysts never need them.
2. The engine's own parser (refused_functions): the statement is parsed by ClickHouse
   (EXPLAIN AST, which runs nothing) and every function it names is checked against the deny
   list below and against the engine's table functions outside SAFE_TABLE_FUNCTIONS. A parse by
   the engine cannot be fooled by quoting, comments or case the way a regular expression can.
   This is what refuses `file('/etc/hostname')`: readonly=1 refuses the file *table* function,
   but the scalar file() reads any file the engine can.
3. The session (analyst_session_settings): the analyst's connection is opened with the limits
   (max_execution_time, result rows and bytes, memory) set first and readonly=1 set last, so a
   query cannot change them (a SETTINGS clause, even in a subquery, is refused in readonly mode)
   and a table function that reaches outside (url, s3, remote, mysql, executable, python ...) is
   refused by the engine too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from processors.config import ClickHouseSettings

READ_ONLY = re.compile(r"^\s*(SELECT|WITH|SHOW|DESCRIBE|DESC|EXPLAIN)\b", re.IGNORECASE)
FILE_WORDS = ("OUTFILE", "INFILE")

# Functions that read files, URLs or other servers, or run programs: refused wherever they appear
# in the parsed statement (lower case; names are compared lower-cased). Scalar and table functions
# alike: the engine's parser names both "Function".
DENIED_FUNCTIONS = frozenset({
    "file", "filecluster", "filesystem", "url", "urlcluster", "s3", "s3cluster", "gcs", "oss",
    "cosn", "hdfs", "hdfscluster", "azureblobstorage", "azureblobstoragecluster", "remote",
    "remotesecure", "cluster", "clusterallreplicas", "mysql", "postgresql", "jdbc", "odbc",
    "sqlite", "mongodb", "redis", "input", "executable", "python", "eval", "dictionary",
    "arrowstream", "arrowflight", "bigquery", "ytsaurus", "hive", "catboostevaluate",
    "naivebayesclassifier", "prometheusquery", "prometheusqueryrange",
})  # fmt: skip
DENIED_PREFIXES = ("iceberg", "deltalake", "hudi", "paimon", "s3", "azureblob", "hdfs")

# Table functions that only generate rows or read this engine's own tables. Every other table
# function the engine knows (system.table_functions) is refused, so one added by a later engine
# version is refused until someone decides otherwise.
SAFE_TABLE_FUNCTIONS = frozenset({
    "numbers", "numbers_mt", "zeros", "zeros_mt", "generaterandom", "generateseries",
    "generate_series", "primes", "values", "null", "view", "merge", "loop", "format",
})  # fmt: skip

_AST_FUNCTION = re.compile(r"^\s*Function\s+(\S+)")


class AnalystQueryRefused(ValueError):
    """The statement may not run for an analyst; the message says why."""


class AnalystQueryFailed(RuntimeError):
    """The statement ran and ClickHouse stopped or refused it (a limit, a syntax error)."""

    def __init__(self, message: str, limit: str = "") -> None:
        super().__init__(message)
        self.limit = limit  # which limit stopped it, if one did ("" otherwise)


@dataclass(frozen=True)
class AnalystLimits:
    max_execution_s: float
    max_result_rows: int
    max_result_bytes: int
    max_memory_bytes: int
    max_threads: int
    max_query_chars: int

    @classmethod
    def of(cls, settings: ClickHouseSettings) -> AnalystLimits:
        return cls(
            max_execution_s=settings.analyst_max_execution_s,
            max_result_rows=settings.analyst_max_result_rows,
            max_result_bytes=settings.analyst_max_result_bytes,
            max_memory_bytes=settings.analyst_max_memory_bytes,
            max_threads=settings.analyst_max_threads,
            max_query_chars=settings.analyst_max_query_chars,
        )


def analyst_session_settings(limits: AnalystLimits) -> dict[str, Any]:
    """Session settings for an analyst's connection, in the order they must be applied: every
    limit first, readonly last (once readonly=1 is set no setting can be changed, ours included).
    """
    settings: dict[str, Any] = {
        "max_execution_time": limits.max_execution_s,
        "timeout_overflow_mode": "throw",
        "max_result_rows": limits.max_result_rows,
        "max_result_bytes": limits.max_result_bytes,
        "result_overflow_mode": "throw",
        "max_memory_usage": limits.max_memory_bytes,
        "allow_ddl": 0,
        "allow_introspection_functions": 0,
    }
    if limits.max_threads:
        settings["max_threads"] = limits.max_threads
    settings["readonly"] = 1
    return settings


def analyst_query_problem(sql: str, max_chars: int = 64 * 1024) -> str | None:
    """Why this SQL may not run for an analyst, judged from its text, or None if it may."""
    if len(sql) > max_chars:
        return f"the query is {len(sql)} characters; at most {max_chars} (clickhouse.analyst_max_query_chars)"
    if not READ_ONLY.match(sql) or ";" in sql.strip().rstrip(";"):
        return "only one read-only statement (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN)"
    upper = sql.upper()
    for word in FILE_WORDS:
        if word in upper:
            return f"{word} may not appear anywhere in the query: results come back in the response"
    return None


def functions_in_ast(lines: Iterable[str]) -> set[str]:
    """Every function name in EXPLAIN AST output (scalar, aggregate, lambda and table functions)."""
    names = set()
    for line in lines:
        match = _AST_FUNCTION.match(line)
        if match:
            names.add(match.group(1))
    return names


def is_denied(name: str, table_functions: frozenset[str]) -> bool:
    lower = name.lower()
    if lower in DENIED_FUNCTIONS or lower.startswith(DENIED_PREFIXES):
        return True
    return lower in table_functions and lower not in SAFE_TABLE_FUNCTIONS


def engine_table_functions(client: Client) -> frozenset[str]:
    rows = client.query("SELECT name FROM system.table_functions").result_rows
    return frozenset(str(row[0]).lower() for row in rows)


def refused_functions(
    client: Client, sql: str, limits: AnalystLimits, table_functions: frozenset[str]
) -> list[str]:
    """The functions in this statement an analyst may not call, as the engine's parser reads it."""
    try:
        lines = [str(row[0]) for row in client.query(f"EXPLAIN AST {sql}").result_rows]
    except OperationalError:
        raise
    except DatabaseError as exc:
        raise explain_failure(exc, limits) from exc
    return sorted(name for name in functions_in_ast(lines) if is_denied(name, table_functions))


# ClickHouse error code -> which limit stopped the query, for a message that names it.
_LIMIT_CODES = {
    159: "max_execution_time",  # TIMEOUT_EXCEEDED
    241: "max_memory_usage",  # MEMORY_LIMIT_EXCEEDED
    396: "max_result_rows/max_result_bytes",  # TOO_MANY_ROWS_OR_BYTES
    164: "readonly",  # READONLY: a write, a setting change, a table function reaching outside
}


def explain_failure(exc: DatabaseError, limits: AnalystLimits) -> AnalystQueryFailed:
    code = getattr(exc, "code", None)
    first = _first_line(exc)
    if code == 159:
        return AnalystQueryFailed(
            f"timeout: the query ran past {limits.max_execution_s:g}s "
            "(clickhouse.analyst_max_execution_s) and was stopped; narrow it (a WHERE on job_id or at, "
            f"a LIMIT) and try again. ClickHouse said: {first}",
            "max_execution_time",
        )
    if code == 241:
        return AnalystQueryFailed(
            f"the query needed more than {limits.max_memory_bytes} bytes of memory "
            f"(clickhouse.analyst_max_memory_bytes) and was stopped. ClickHouse said: {first}",
            "max_memory_usage",
        )
    if code == 396:
        return AnalystQueryFailed(
            f"the result is larger than {limits.max_result_rows} rows or {limits.max_result_bytes} bytes "
            "(clickhouse.analyst_max_result_rows/_bytes); add a LIMIT or aggregate. "
            f"ClickHouse said: {first}",
            "max_result_rows",
        )
    if code == 164:
        return AnalystQueryFailed(f"refused in readonly mode: {first}", "readonly")
    return AnalystQueryFailed(first)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__


def run_analyst_query(
    client: Client, sql: str, limits: AnalystLimits, table_functions: frozenset[str]
) -> dict[str, Any]:
    """The text check, the parse-level check, then the query, on a connection opened with
    analyst_session_settings. table_functions: engine_table_functions() of that engine."""
    if problem := analyst_query_problem(sql, limits.max_query_chars):
        raise AnalystQueryRefused(problem)
    denied = refused_functions(client, sql, limits, table_functions)
    if denied:
        raise AnalystQueryRefused(
            f"{', '.join(denied)} may not be called here: functions that read files, URLs or other "
            "servers, or run programs, are refused (only the event log can be queried)"
        )
    try:
        result = client.query(sql)
    except OperationalError:
        raise  # the engine cannot be reached: not the query's fault
    except DatabaseError as exc:
        raise explain_failure(exc, limits) from exc
    return {"columns": list(result.column_names), "rows": [list(row) for row in result.result_rows]}
