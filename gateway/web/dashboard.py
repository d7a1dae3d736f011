"""The analysts' dashboard: artifact rate, first-pass yield, p95 handler time per stage,
throughput and failure reasons over time, drawn with uPlot (static/vendor/uplot).

Every number comes from a named query (processors/eventlog/sql/, the ones `lightbox summary`
prints from), run as analyst SQL through the event-log reader: read-only and bounded like any
analyst's query, and never on the sink's insert connection. GET /dashboard/data answers every
chart's series on one time axis, so the page only draws.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.web.auth import require
from gateway.web.pages import ANALYSTS, PageError, page, page_identity, render
from gateway.web.resources import EVENT_LOG
from gateway.web.responses import Problem, json_response
from processors.eventlog import named
from processors.eventlog.reader import EventLogReader, EventLogUnavailable, QueryRefused

routes = web.RouteTableDef()

WINDOWS: tuple[tuple[int, str], ...] = (
    (15 * 60, "last 15 minutes"),
    (3600, "last hour"),
    (6 * 3600, "last 6 hours"),
    (86400, "last 24 hours"),
    (7 * 86400, "last 7 days"),
)
DEFAULT_WINDOW_S = 3600
# Interval per point: the smallest that keeps a chart under MAX_POINTS points.
BUCKETS_S = (5, 10, 30, 60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600)
MAX_POINTS = 120
# Reasons drawn one line each; the rest are summed into one line.
TOP_REASONS = 8


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    unit: str  # ratio | ms | count: how the page formats values
    queries: tuple[str, ...]


CHARTS = (
    Chart("quality", "Artifact rate and first-pass yield", "ratio",
          ("artifact_rate_over_time", "first_pass_yield_over_time")),
    Chart("stage_p95", "p95 handler time per stage", "ms", ("stage_p95_over_time",)),
    Chart("throughput", "Throughput: jobs per interval", "count", ("throughput_over_time",)),
    Chart("failure_reasons", "Failure reasons over time", "count", ("failure_reasons_over_time",)),
)  # fmt: skip


def bucket_for(window_s: int) -> int:
    for bucket in BUCKETS_S:
        if window_s / bucket <= MAX_POINTS:
            return bucket
    return BUCKETS_S[-1]


def time_axis(since_ms: int, now_ms: int, bucket_s: int) -> list[int]:
    """Every interval start (epoch seconds) from the window's first to now: points with no
    events are there too, so a quiet interval shows as zero (or a gap), not as a line across."""
    first = (since_ms // 1000) // bucket_s * bucket_s
    last = (now_ms // 1000) // bucket_s * bucket_s
    return list(range(first, last + 1, bucket_s))


def finite(value: Any) -> Any:
    """NaN and infinities (ClickHouse's quantile of nothing) as null: JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _column(rows: Iterable[dict[str, Any]], x: list[int], value: str, empty: Any) -> list[Any]:
    by_bucket = {int(row["bucket"]): finite(row[value]) for row in rows}
    return [by_bucket.get(bucket, empty) for bucket in x]


def _pivot(
    rows: list[dict[str, Any]], x: list[int], key: str, value: str, empty: Any
) -> dict[str, list[Any]]:
    """One series per distinct `key` (a stage, a reason), aligned on x."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(str(row[key]), []).append(row)
    return {name: _column(group, x, value, empty) for name, group in sorted(groups.items())}


def charts_of(answers: dict[str, list[dict[str, Any]]], x: list[int]) -> dict[str, dict[str, Any]]:
    """Each chart's series from the named queries' rows."""

    def series(label: str, values: list[Any]) -> dict[str, Any]:
        return {"label": label, "values": values}

    quality_rows = (
        ("artifact rate", "artifact_rate_over_time", "artifact_rate"),
        ("first-pass yield", "first_pass_yield_over_time", "first_pass_yield"),
    )
    quality = [
        series(label, _column(answers[q], x, value, None)) for label, q, value in quality_rows if answers[q]
    ]
    stages = _pivot(answers["stage_p95_over_time"], x, "stage", "p95_ms", None)
    rows = answers["throughput_over_time"]
    counts = ("accepted", "published", "failed", "rejected")
    throughput = [series(name, _column(rows, x, name, 0)) for name in counts] if rows else []
    reasons = _pivot(answers["failure_reasons_over_time"], x, "reason", "events", 0)
    ranked = sorted(reasons, key=lambda name: (-sum(reasons[name]), name))
    reason_series = [series(name, reasons[name]) for name in ranked[:TOP_REASONS]]
    if rest := ranked[TOP_REASONS:]:
        summed = [sum(values) for values in zip(*(reasons[name] for name in rest), strict=True)]
        reason_series.append(series(f"{len(rest)} other reasons", summed))
    drawn = {
        "quality": quality,
        "stage_p95": [series(name, values) for name, values in stages.items()],
        "throughput": throughput,
        "failure_reasons": reason_series,
    }
    return {
        chart.id: {
            "title": chart.title,
            "unit": chart.unit,
            "queries": list(chart.queries),
            "series": drawn[chart.id],
        }
        for chart in CHARTS
    }


async def _ask(reader: EventLogReader, name: str, **values: Any) -> list[dict[str, Any]]:
    """One named query, as analyst SQL (the reader's bounded, read-only path)."""
    result = await reader.sql(named.render(name, database=reader.database, **values))
    return [{k: finite(v) for k, v in row.items()} for row in named.rows_of(result)]


async def dashboard_data(reader: EventLogReader, window_s: int, now_ms: int) -> dict[str, Any]:
    since_ms = now_ms - window_s * 1000
    bucket_s = bucket_for(window_s)
    totals = {name: await _ask(reader, name, since_ms=since_ms) for name in named.SUMMARY_QUERIES}
    over_time = {
        name: await _ask(reader, name, since_ms=since_ms, bucket_s=bucket_s)
        for chart in CHARTS
        for name in chart.queries
    }
    x = time_axis(since_ms, now_ms, bucket_s)
    summary = named.summary_of(totals)
    summary["latency_ms"] = {k: finite(v) for k, v in summary["latency_ms"].items()}
    return {
        "window_s": window_s,
        "since_ms": since_ms,
        "bucket_s": bucket_s,
        "x": x,
        "totals": summary,
        "charts": charts_of(over_time, x),
    }


@routes.get("/dashboard")
@page
async def dashboard_page(request: web.Request) -> web.Response:
    page_identity(request, *ANALYSTS)
    return render(request, "dashboard.html", windows=WINDOWS, default_window=DEFAULT_WINDOW_S, charts=CHARTS)


@routes.get("/dashboard/data")
async def dashboard_json(request: web.Request) -> web.Response:
    require(request, *ANALYSTS)
    raw = request.query.get("window_s", str(DEFAULT_WINDOW_S))
    allowed = [seconds for seconds, _ in WINDOWS]
    if not raw.isdigit() or int(raw) not in allowed:
        raise Problem(400, f"window_s must be one of {allowed}", field="window_s", kind="invalid-field")
    try:
        data = await dashboard_data(request.app[EVENT_LOG], int(raw), int(time.time() * 1000))
    except EventLogUnavailable as exc:
        raise Problem(503, str(exc)) from exc
    except QueryRefused as exc:
        # The analyst lane is busy (or a limit stopped a query): the page says so and can retry.
        raise Problem(503, f"the event log refused a dashboard query: {exc}") from exc
    return json_response(data)


@routes.get("/dashboard/sql/{name}")
@page
async def named_sql(request: web.Request) -> web.Response:
    """A named query's file as it is: what analysts copy into `lightbox sql` or clickhouse client."""
    page_identity(request, *ANALYSTS)
    try:
        query = named.load(request.match_info["name"])
    except named.NamedQueryError as exc:
        raise PageError(404, "No such query", str(exc)) from None
    text = (named.SQL_DIR / f"{query.name}.sql").read_text(encoding="utf-8")
    return web.Response(text=text, content_type="text/plain", headers={"X-Content-Type-Options": "nosniff"})
