"""`lightbox metrics`: the event log's figures per stage, model, backend, template or campaign.

Every figure is a named SQL file (processors/eventlog/sql/, docs/analytics.md) run on the
analyst's read-only path, the one the gateway dashboard uses; the report is assembled by
processors/eventlog/figures.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from typing import Any

from gateway.cli.common import Commands, settings_of

_SPAN = re.compile(r"^(\d+)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def since_ms_of(text: str, now_ms: int) -> int:
    """'90s', '15m', '1h', '2d', '1w' ago, or 'all' (0). Raises ValueError otherwise."""
    if text == "all":
        return 0
    match = _SPAN.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"--since must be a span like 30m, 1h, 7d, 2w, or 'all'; not {text!r}")
    return max(0, now_ms - int(match.group(1)) * _UNIT_S[match.group(2)] * 1000)


def _lag(settings: Any) -> list[dict[str, Any]] | dict[str, str]:
    """Consumer lag per group (gateway/ops/lag.py); an error entry when Kafka cannot answer."""
    from gateway.ops.lag import stage_lags
    from processors.kafka_clients import group_id_for

    try:
        lags = stage_lags(settings)
        return [
            {"stage": x.stage, "group": group_id_for(settings, x.stage), "topic": x.topic, "lag": x.lag}
            for x in lags
        ]
    except Exception as exc:  # the figures stand without it: say why it is missing
        return {"error": f"consumer lag unavailable: {exc}"}


async def _answers(settings: Any, asks: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    from processors.eventlog import named
    from processors.eventlog.reader import EventLogReader

    answers = {}
    async with EventLogReader(settings) as reader:
        for key, ask in asks.items():
            text = named.render(ask.name, database=reader.database, **ask.values)
            answers[key] = named.rows_of(await reader.sql(text))
    return answers


def cmd_metrics(args: argparse.Namespace) -> int:
    from processors.eventlog import figures
    from processors.eventlog.reader import EventLogError

    try:
        since_ms = since_ms_of(args.since, int(time.time() * 1000))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings = settings_of(args)
    asks = figures.asks(args.by, since_ms)
    try:
        answers = asyncio.run(_answers(settings, asks))
    except EventLogError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    lag = None if args.no_lag else _lag(settings)
    report = figures.metrics_of(answers, args.by, since_ms, settings.costs, lag)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        _print(report, args.since)
    return 0


def _pct(value: float) -> str:
    return f"{value * 100:5.1f}%"


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _money(value: Any, currency: str) -> str:
    return "-" if value is None else f"{value:.4f} {currency}"


def _figures_lines(f: dict[str, Any], currency: str) -> list[str]:
    a, e2e, t, c = f["artifact_rate"], f["end_to_end_ms"], f["throughput"], f["compute"]
    unpriced = f["cost"]["unpriced_backends"]
    per_gpu_hour = "-" if t["images_per_gpu_hour"] is None else f"{t['images_per_gpu_hour']:,.1f}"
    return [
        f"jobs {f['jobs']}  delivered {f['delivered']}  failed {f['failed']}  rejected {f['rejected']}"
        f"  in review {f['in_review']}",
        f"artifact rate: gate rejected {_pct(a['gate_rejected_first_pass'])} of "
        f"{a['candidates']} first-pass candidates; of {a['scored_jobs']} scored jobs "
        f"{_pct(a['needed_retry'])} needed a retry, {_pct(a['needed_person'])} a person",
        f"first-pass yield {_pct(f['first_pass_yield'])}  retry rate {_pct(f['retry_rate'])}"
        f"  fallback rate {_pct(f['fallback_rate'])}",
        f"end to end ms: p50 {_ms(e2e['p50'])}  p95 {_ms(e2e['p95'])}  p99 {_ms(e2e['p99'])}",
        f"throughput {t['delivered_per_minute'] or 0:,.2f} delivered/min  images per GPU-hour "
        f"{per_gpu_hour}  (GPU {c['gpu_seconds']:,.1f} s, CPU {c['cpu_seconds']:,.1f} s, "
        f"{c['api_calls']} API calls)",
        f"cost {_money(f['cost']['total'], currency)}, per delivered image "
        f"{_money(f['cost']['per_delivered_image'], currency)}"
        + (f"  (no price for: {', '.join(unpriced)})" if unpriced else ""),
    ]


def _print(report: dict[str, Any], since: str) -> None:
    currency = report["currency"]
    print(f"since {since}" if since == "all" else f"last {since}")
    for line in _figures_lines(report["totals"], currency):
        print(f"  {line}")
    if report["by"] == "stage" or report["by"] is None:
        print("\nper stage (handler ms)      events      p50      p95      p99  failed retries  dlq")
        for s in report["stages"]:
            print(
                f"  {s['stage']:<24} {s['events']:>8} {_ms(s['p50_ms']):>8} {_ms(s['p95_ms']):>8} "
                f"{_ms(s['p99_ms']):>8} {s['failed']:>7} {s['retries']:>7} {s['dead_letters']:>4}"
            )
    for group in report.get("groups", []):
        print(f"\n{report['by']} {group['group'] or '(none)'}")
        for line in _figures_lines(group, currency):
            print(f"  {line}")
        stages = [s for s in report["group_stages"] if s["group"] == group["group"]]
        if stages:
            print("  per stage (handler ms)    events      p50      p95      p99")
        for s in stages:
            print(
                f"    {s['stage']:<22} {s['events']:>8} {_ms(s['p50_ms']):>8} {_ms(s['p95_ms']):>8} "
                f"{_ms(s['p99_ms']):>8}"
            )
    if "credits" in report:
        credits = report["credits"]
        print("\ncredits per account           reserved   consumed   released")
        if credits["accounts"] is None:
            print(f"  ({credits['note']})")
        for row in credits["accounts"] or []:
            amounts = " ".join(f"{row[k]:>10.2f}" for k in ("reserved", "consumed", "released"))
            print(f"  {row['account']:<26} {amounts}")
    if report["failure_reasons"]:
        print("\nreasons")
        for r in report["failure_reasons"][:10]:
            print(f"  {r['events']:>6}  {r['stage']}/{r['state']}: {r['reason']}")
    if report["dead_letters"]:
        print("\ndead letters")
        for d in report["dead_letters"]:
            print(f"  {d['letters']:>6}  {d['stage']}: {d['error_class']}")
    lag = report["lag"]
    if isinstance(lag, dict):
        print(f"\n{lag['error']}")
    elif lag:
        print("\nconsumer lag")
        for row in lag:
            print(f"  {row['lag']:>8}  {row['group']} ({row['topic']})")


def register(commands: Commands) -> None:
    from processors.eventlog.figures import GROUPINGS

    p = commands.add_parser(
        "metrics",
        help="artifact rate, yield, latency per stage, throughput, cost, dead letters, lag",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
The event log's figures for the jobs with an event in the window (all their events counted):
  artifact rate     the share of first-pass candidates the quality gate rejected, and of the
                    jobs it scored the share that needed a retry and the share that needed a person
  first-pass yield  scored jobs that passed on their first attempt, with no retry or review
  retry, fallback   jobs with any retry; generated jobs served by a fallback backend
  latency           p50/p95/p99 handler time per stage, and end to end for delivered jobs
  throughput        delivered images per minute, images per GPU-hour
  cost              per delivered image, from the `costs` cost model in configuration
  failures          reasons recorded, dead letters by stage and error class, consumer lag
Each figure is a named SQL file in processors/eventlog/sql/ (docs/analytics.md). With the
embedded ClickHouse the eventlog stage must be running (`lightbox run all`).

examples:
  lightbox metrics                      the last hour
  lightbox metrics --since 1d --by model
  lightbox metrics --since all --json""",
    )
    p.add_argument("--since", default="1h", help="window: 30m, 1h (default), 7d, 2w, or 'all'")
    p.add_argument(
        "--by",
        choices=GROUPINGS,
        help="one row per stage, model, backend, template or campaign (campaign adds credits)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-lag", action="store_true", help="skip consumer lag (it asks Kafka)")
    p.set_defaults(func=cmd_metrics)
