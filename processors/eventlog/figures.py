"""The figures `lightbox metrics` shows, from the rows of the named queries (processors/eventlog/
sql/) however they were run, and the cost model in configuration.

The SQL counts; this module only names what it counted and prices compute (prices live in
configuration, not in SQL, so a Grafana panel or an analyst sees the same seconds and calls).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from processors.config import CostSettings

GROUPINGS = ("stage", "model", "backend", "template", "campaign")
# Written by the credits work (processors/credits/): columns (account, reserved, consumed,
# released). Joined into `--by campaign` when the file is there; see credit_rows().
CREDITS_QUERY = "credits_by_account"


@dataclass(frozen=True)
class Ask:
    """One named query to run, with its parameters."""

    name: str
    values: dict[str, Any]


def asks(by: str | None, since_ms: int) -> dict[str, Ask]:
    """The named queries behind one metrics report, by the key the report reads them under."""
    from processors.eventlog import named  # clickhouse-connect: not at import (`--help` stays fast)

    group = by if by in ("model", "backend", "template", "campaign") else ""
    wanted = {
        "totals": Ask("job_figures", {"since_ms": since_ms, "by": ""}),
        "usage": Ask("compute_usage", {"since_ms": since_ms, "by": ""}),
        "stages": Ask("stage_time", {"since_ms": since_ms}),
        "dead_letters": Ask("dead_letters", {"since_ms": since_ms}),
        "failure_reasons": Ask("failure_reasons", {"since_ms": since_ms}),
    }
    if group:
        wanted["groups"] = Ask("job_figures", {"since_ms": since_ms, "by": group})
        wanted["group_usage"] = Ask("compute_usage", {"since_ms": since_ms, "by": group})
        wanted["group_stages"] = Ask("stage_time_by_group", {"since_ms": since_ms, "by": group})
    if by == "campaign" and CREDITS_QUERY in named.names():
        query = named.load(CREDITS_QUERY)
        wanted["credits"] = Ask(CREDITS_QUERY, {"since_ms": since_ms} if "since_ms" in query.params else {})
    return wanted


def finite(value: Any) -> Any:
    """NaN and infinities (a quantile of nothing) as None: JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _num(value: Any) -> float:
    return float(value) if value not in (None, "") else 0.0


def price(costs: CostSettings, usage: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What these generations cost, and which backends the cost model has no price for."""
    total, unpriced = 0.0, set()
    for row in usage:
        rate = costs.backends.get(str(row["backend"]))
        if rate is None:
            unpriced.add(str(row["backend"]))
            continue
        total += (
            _num(row["gpu_seconds"]) * rate.gpu_second
            + _num(row["cpu_seconds"]) * rate.cpu_second
            + _num(row["api_calls"]) * rate.api_call
        )
    return {"total": total, "unpriced_backends": sorted(unpriced)}


def job_figures(
    row: Mapping[str, Any], usage: Sequence[Mapping[str, Any]], costs: CostSettings
) -> dict[str, Any]:
    """One job_figures.sql row (with its compute_usage.sql rows) as the report shows it."""
    cost = price(costs, usage)
    delivered = int(row["delivered"])
    cost["per_delivered_image"] = cost["total"] / delivered if delivered else None
    return {
        "jobs": int(row["jobs"]),
        "delivered": delivered,
        "failed": int(row["failed_jobs"]),
        "rejected": int(row["rejected_jobs"]),
        "in_review": int(row["in_review_jobs"]),
        "artifact_rate": {
            "gate_rejected_first_pass": float(row["gate_rejection_rate"]),
            "candidates": int(row["candidates"]),
            "rejected_candidates": int(row["rejected_candidates"]),
            "needed_retry": float(row["needed_retry_rate"]),
            "needed_person": float(row["needed_person_rate"]),
            "scored_jobs": int(row["scored_jobs"]),
        },
        "first_pass_yield": float(row["first_pass_yield"]),
        "retry_rate": float(row["retry_rate"]),
        "fallback_rate": float(row["fallback_rate"]),
        "end_to_end_ms": {
            "p50": finite(row["e2e_p50_ms"]),
            "p95": finite(row["e2e_p95_ms"]),
            "p99": finite(row["e2e_p99_ms"]),
        },
        "throughput": {
            "delivered_per_minute": finite(float(row["delivered_per_minute"])),
            "images_per_gpu_hour": finite(row["images_per_gpu_hour"]),
            "span_s": float(row["span_s"]),
        },
        "compute": {
            "generated_images": int(row["generated_images"]),
            "gpu_seconds": float(row["gpu_s"]),
            "cpu_seconds": float(row["cpu_s"]),
            "api_calls": int(row["calls"]),
        },
        "cost": cost,
    }


EMPTY_TOTALS: dict[str, Any] = {
    "group_key": "", "jobs": 0, "delivered": 0, "failed_jobs": 0, "rejected_jobs": 0,
    "in_review_jobs": 0, "candidates": 0, "rejected_candidates": 0, "gate_rejection_rate": 0,
    "needed_retry_rate": 0, "needed_person_rate": 0, "scored_jobs": 0, "first_pass_yield": 0,
    "retry_rate": 0, "fallback_rate": 0, "e2e_p50_ms": None, "e2e_p95_ms": None, "e2e_p99_ms": None,
    "delivered_per_minute": 0.0, "images_per_gpu_hour": None, "span_s": 0.0, "generated_images": 0,
    "gpu_s": 0.0, "cpu_s": 0.0, "calls": 0,
}  # fmt: skip


def metrics_of(
    answers: Mapping[str, list[dict[str, Any]]],
    by: str | None,
    since_ms: int,
    costs: CostSettings,
    lag: Any = None,
) -> dict[str, Any]:
    """The report from the rows of each of asks(by, since_ms) and the consumer lag."""
    (totals,) = answers["totals"] or [EMPTY_TOTALS]  # no jobs at all: one row of zeros
    report: dict[str, Any] = {
        "since_ms": since_ms,
        "by": by,
        "currency": costs.currency,
        "totals": job_figures(totals, answers["usage"], costs),
        "stages": [
            {
                **_stage_time(row),
                "failed": int(row["failed"]),
                "retries": int(row["retries"]),
                "dead_letters": int(row["dead_letters"]),
            }
            for row in answers["stages"]
        ],
        "failure_reasons": [
            {"stage": r["stage"], "state": r["state"], "reason": r["reason"], "events": int(r["events"])}
            for r in answers["failure_reasons"]
        ],
        "dead_letters": [
            {
                "stage": r["stage"],
                "error_class": r["error_class"],
                "letters": int(r["letters"]),
                "oldest_ms": int(r["oldest_ms"]),
                "newest_ms": int(r["newest_ms"]),
            }
            for r in answers["dead_letters"]
        ],
        "lag": lag,
    }
    if "groups" in answers:
        usage = answers["group_usage"]
        report["groups"] = [
            {
                "group": row["group_key"],
                **job_figures(row, [u for u in usage if u["group_key"] == row["group_key"]], costs),
            }
            for row in answers["groups"]
        ]
        report["group_stages"] = [
            {"group": row["group_key"], **_stage_time(row)} for row in answers["group_stages"]
        ]
    if by == "campaign":
        report["credits"] = credit_rows(answers.get("credits"))
    return report


def _stage_time(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "stage": row["stage"],
        "events": int(row["events"]),
        "total_ms": float(row["total_ms"]),
        "p50_ms": finite(row["p50_ms"]),
        "p95_ms": finite(row["p95_ms"]),
        "p99_ms": finite(row["p99_ms"]),
    }


def credit_rows(rows: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Credits reserved, consumed and released per account (credits_by_account.sql), or why not."""
    if rows is None:
        return {"accounts": None, "note": f"no {CREDITS_QUERY}.sql named query in this build"}
    return {
        "accounts": [
            {
                "account": row["account"],
                "reserved": _num(row["reserved"]),
                "consumed": _num(row["consumed"]),
                "released": _num(row["released"]),
            }
            for row in rows
        ],
        "note": "",
    }
