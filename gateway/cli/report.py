"""Human-readable summaries of the event log."""

from __future__ import annotations

from typing import Any


def _ms(value: Any) -> str:
    return "-" if value is None or value != value else f"{float(value):.0f} ms"  # NaN when no rows


def print_summary(summary: dict[str, Any]) -> None:
    states = summary["jobs_by_state"]
    print("jobs by state: " + (", ".join(f"{k}={v}" for k, v in sorted(states.items())) or "none yet"))
    latency = summary["latency_ms"]
    print(
        f"end-to-end latency (accepted → published, {summary['published']} jobs): "
        f"p50 {_ms(latency['p50'])}, p95 {_ms(latency['p95'])}, max {_ms(latency['max'])}"
    )
    print(
        f"artifact rate: {summary['artifact_rate']:.1%} of {summary['quality_verdicts']} quality verdicts "
        "were rejected (blank, wrong size, product lost…)"
    )
    if summary.get("first_pass_scored"):
        print(
            f"first-pass yield: {summary['first_pass_yield']:.1%} of {summary['first_pass_scored']} jobs "
            "passed the quality gate on their first attempt"
        )
    if stages := summary.get("stage_handler_ms"):
        print(
            "p95 handler time per stage: "
            + ", ".join(f"{s} {_ms(v['p95_ms'])}" for s, v in sorted(stages.items()))
        )
    if summary["reasons"]:
        print("reasons recorded:")
        for r in summary["reasons"]:
            print(f"  {r['count']:>5}  {r['stage']}/{r['state']}: {r['reason']}")
