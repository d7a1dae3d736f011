"""The named event-log questions: one SQL file each under processors/eventlog/sql/, read by the
dashboard, the summary and analysts alike, so a number means the same wherever it is shown.

A file is a comment saying what the question is, then one read-only statement. Its parameters
are written the way ClickHouse writes query parameters (`{since_ms:Int64}`), so an analyst can run
the file as it is with `clickhouse client --param_since_ms=0 ...`. Here they are bound to
literals before the text is sent, which lets the same text go wherever event-log SQL goes: a
service connection, a ClickHouse server, or the analyst endpoint (which takes text only). Only the
few types below are bound, each checked, so a value can never turn into SQL.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.client import Client

from processors.job_states import LEDGER, LIFECYCLE

SQL_DIR = Path(__file__).with_name("sql")
_PARAM = re.compile(r"\{(\w+):([A-Za-z0-9_()]+)\}")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NAME = re.compile(r"^[a-z0-9_]+$")
_INT_RANGES = {"Int64": (-(2**63), 2**63 - 1), "UInt32": (0, 2**32 - 1)}
# Bound by the loader itself, from the one home of each: never passed by a caller.
_BUILT_IN: dict[str, Any] = {
    "lifecycle": [str(state) for state in LIFECYCLE],
    "ledger": sorted(str(state) for state in LEDGER),
}


class NamedQueryError(ValueError):
    """No such named query, or a parameter missing, unknown or of the wrong type."""


@dataclass(frozen=True)
class NamedQuery:
    name: str
    description: str  # the file's leading comment, as prose
    body: str  # the statement, without the comment
    params: dict[str, str]  # parameter -> ClickHouse type, in order of appearance

    @property
    def title(self) -> str:
        return self.description.split(":", 1)[0]

    def render(self, **values: Any) -> str:
        """The statement with every parameter bound to a checked literal."""
        given = {**_BUILT_IN, **values}
        missing = [name for name in self.params if name not in given]
        if missing:
            raise NamedQueryError(f"{self.name}: missing parameter(s) {', '.join(missing)}")
        return self.bind_some(**values)

    def bind_some(self, **values: Any) -> str:
        """The statement with only these parameters (and the loader's own) bound, the others
        left as written: for tools that fill the rest their own way (the Grafana generator)."""
        given = {**{k: v for k, v in _BUILT_IN.items() if k in self.params}, **values}
        if unknown := sorted(set(values) - set(self.params)):
            raise NamedQueryError(f"{self.name}: no parameter(s) {', '.join(unknown)}")

        def bind(match: re.Match[str]) -> str:
            name, kind = match.group(1), match.group(2)
            return _literal(self.name, name, kind, given[name]) if name in given else match.group(0)

        return _PARAM.sub(bind, self.body)


def _literal(query: str, name: str, kind: str, value: Any) -> str:
    where = f"{query}: parameter {name} ({kind})"
    if kind in _INT_RANGES:
        low, high = _INT_RANGES[kind]
        # bool is an int in Python; True is never meant as 1 here.
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise NamedQueryError(f"{where} must be an integer in [{low}, {high}], not {value!r}")
        return str(value)
    if kind == "Identifier":
        if not isinstance(value, str) or not _IDENTIFIER.match(value):
            raise NamedQueryError(f"{where} must be a plain name (letters, digits, _), not {value!r}")
        return f"`{value}`"
    if kind == "Array(String)":
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise NamedQueryError(f"{where} must be a list of strings, not {value!r}")
        return "[" + ", ".join(_string(where, item) for item in value) + "]"
    if kind == "String":
        return _string(where, value)
    raise NamedQueryError(f"{where}: this loader binds no {kind} parameters")


def _string(where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise NamedQueryError(f"{where} must hold strings, not {value!r}")
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def names() -> list[str]:
    return sorted(path.stem for path in SQL_DIR.glob("*.sql"))


@cache
def load(name: str) -> NamedQuery:
    if not _NAME.match(name) or not (path := SQL_DIR / f"{name}.sql").is_file():
        raise NamedQueryError(f"no named query {name!r}; there are: {', '.join(names())}")
    comment, body = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not body and line.startswith("--"):
            comment.append(line.removeprefix("--").strip())
        elif body or line.strip():
            body.append(line)
    text = "\n".join(body).strip()
    params = {match.group(1): match.group(2) for match in _PARAM.finditer(text)}
    return NamedQuery(name, " ".join(comment), text, params)


def render(name: str, **values: Any) -> str:
    return load(name).render(**values)


def rows_of(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """{"columns": [...], "rows": [[...]]} (what the analyst endpoint answers) as one dict a row."""
    columns = list(result["columns"])
    return [dict(zip(columns, row, strict=True)) for row in result["rows"]]


def run(client: Client, database: str, name: str, **values: Any) -> dict[str, Any]:
    """A named query on a ClickHouse client, answered like the analyst endpoint answers."""
    result = client.query(render(name, database=database, **values))
    return {"columns": list(result.column_names), "rows": [list(row) for row in result.result_rows]}


def summary(client: Client, database: str, since_ms: int = 0) -> dict[str, Any]:
    """Jobs by state, end-to-end latency, artifact rate, first-pass yield, reasons and time per
    stage: what `lightbox summary` prints and GET /v1/summary answers."""

    def ask(name: str) -> list[dict[str, Any]]:
        return rows_of(run(client, database, name, since_ms=since_ms))

    return summary_of({name: ask(name) for name in SUMMARY_QUERIES})


SUMMARY_QUERIES = (
    "jobs_by_state",
    "end_to_end_latency",
    "artifact_rate",
    "first_pass_yield",
    "failure_reasons",
    "stage_time",
)


def summary_of(answers: Mapping[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The summary from the rows of each of SUMMARY_QUERIES (however they were run)."""
    (latency,) = answers["end_to_end_latency"]
    (artifacts,) = answers["artifact_rate"]
    (yield_,) = answers["first_pass_yield"]
    return {
        "jobs_by_state": {row["state"]: row["jobs"] for row in answers["jobs_by_state"]},
        "published": latency["published"],
        "latency_ms": {"p50": latency["p50_ms"], "p95": latency["p95_ms"], "max": latency["max_ms"]},
        "artifact_rate": float(artifacts["artifact_rate"]),
        "quality_verdicts": artifacts["verdicts"],
        "first_pass_yield": float(yield_["first_pass_yield"]),
        "first_pass_scored": yield_["scored"],
        "reasons": [
            {"stage": row["stage"], "state": row["state"], "reason": row["reason"], "count": row["events"]}
            for row in answers["failure_reasons"]
        ],
        "stage_handler_ms": {
            row["stage"]: {"events": row["events"], "total_ms": row["total_ms"], "p95_ms": row["p95_ms"]}
            for row in answers["stage_time"]
        },
    }
