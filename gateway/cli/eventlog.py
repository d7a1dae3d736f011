"""Commands that read the event log: `status`, `summary`, `sql`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from gateway.cli.common import Commands, event_log


def _print_timeline(timeline: dict[str, Any]) -> None:
    print(f"job {timeline['job_id']}: {timeline['state']}")
    for event in timeline["events"]:
        reason = f"  reason={event['reason']}" if event["reason"] else ""
        detail = f"  {event['detail']}" if event["detail"] else ""
        print(
            f"  {event['at']}  {event['stage']:<11} {event['state']:<18} "
            f"{event['duration_ms']:8.1f} ms{reason}{detail}"
        )


def cmd_status(args: argparse.Namespace) -> int:
    from gateway.ops.entry import EntryError, check_id

    try:
        check_id(args.job, "job_id")
    except EntryError as exc:
        print(f"error: JOB: {exc.detail}", file=sys.stderr)
        return 2
    timeline = event_log(args, "timeline", args.job)
    if timeline is None:
        return 1
    if args.json:
        print(json.dumps(timeline, indent=2, default=str))
    elif not timeline["events"]:
        print(f"no events for job {args.job} (is the id right, and has the sink caught up?)")
        return 1
    else:
        _print_timeline(timeline)
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    summary = event_log(args, "summary")
    if summary is None:
        return 1
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        from gateway.cli.report import print_summary

        print_summary(summary)
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    result = event_log(args, "sql", args.query)
    if result is None:
        return 1
    print("\t".join(result["columns"]))
    for row in result["rows"]:
        print("\t".join(str(v) for v in row))
    return 0


NEEDS_SINK = (
    "With the embedded ClickHouse the event log is read through the eventlog stage, so it must be "
    "running (`lightbox run all` or `lightbox run eventlog`)."
)


def register(commands: Commands) -> None:
    p = commands.add_parser(
        "status",
        help="a job's state and timeline from the event log",
        description=f"A job's current state and every event recorded for it, in order. {NEEDS_SINK}",
    )
    p.add_argument("job", help="job id (or a catalog event id, for intake rejections)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)

    p = commands.add_parser(
        "summary",
        help="jobs by state, latency percentiles, artifact rate, failure reasons",
        description=f"Jobs by current state, p50/p95 end-to-end latency of published jobs, the "
        f"quality gate's artifact rate, the commonest reasons and time per stage. {NEEDS_SINK}",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_summary)

    p = commands.add_parser(
        "sql",
        help="run one read-only SQL query on the event log (table lightbox.pipeline_events)",
        description="One read-only statement (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN) on a read-only "
        "connection of its own, never the one events are written on: it stops at "
        "clickhouse.analyst_max_execution_s (20 s), analyst_max_result_rows and analyst_max_memory_bytes "
        "with an error naming the limit. Functions that read files, URLs or other servers (file, url, "
        "s3, remote, mysql, ...) are refused, and so is a query containing OUTFILE or INFILE anywhere. "
        f"{NEEDS_SINK}",
    )
    p.add_argument("query", help='e.g. "SELECT stage, count() FROM lightbox.pipeline_events GROUP BY stage"')
    p.set_defaults(func=cmd_sql)
