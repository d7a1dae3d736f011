"""The `lightbox` command. `lightbox --help` and `lightbox COMMAND --help` explain each part."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from processors.config import Settings, load_settings

DESCRIPTION = """\
Lightbox: catalog events in, generated, quality-checked, traceable product images out.

Typical first run on a fresh machine:
  lightbox demo              start the stack and every stage, run a sample catalog, print a summary

Day to day:
  lightbox stack up          install (once) and start Kafka and MinIO on loopback
  lightbox run all           run every stage (or `lightbox run STAGE` for one)
  lightbox submit FILE       publish catalog events from a JSON-lines file
  lightbox status JOB        a job's state and timeline from the event log
  lightbox summary           jobs by state, p50/p95 latency, artifact rate, failure reasons
  lightbox review approve|reject JOB   decide on a held asset
  lightbox lag               consumer lag per stage
  lightbox dlq list|replay   inspect and replay dead letters
  lightbox replay JOB        run a job again from a stage, optionally with another model
  lightbox serve             HTTP gateway for systems without Kafka, and the review page

Configuration: LIGHTBOX_* environment variables or a YAML file (--config / LIGHTBOX_CONFIG);
see README.md, "Configuration".
"""


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def cmd_stack(args: argparse.Namespace) -> int:
    from deploy.local.stack import LocalStack, StackError

    stack = LocalStack(_settings(args))
    try:
        if args.action == "up":
            statuses = stack.up()
        elif args.action == "down":
            stack.down()
            statuses = stack.status()
        elif args.action == "reset":
            stack.reset()
            statuses = stack.status()
        else:
            statuses = stack.status()
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for s in statuses:
        state = "running" if s.running else "stopped"
        print(
            f"{s.name:<8} {state:<8} {s.address:<22} pid={s.pid or '-'}  log={s.log_file}  data={s.data_dir}"
        )
    settings = stack.settings
    where = (
        f"embedded chDB at {settings.data_dir / 'clickhouse'}"
        if settings.uses_embedded_clickhouse
        else settings.clickhouse.url
    )
    print(f"clickhouse {where}")
    return 0 if args.action in ("down", "reset") or all(s.running for s in statuses) else 1


def cmd_run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.stage == "all":
        from deploy.local.supervisor import Supervisor, all_stages

        supervisor = Supervisor(
            all_stages(),
            settings.log_dir / "stages",
            copies=args.copies,
            echo=args.echo,
            metrics_base_port=settings.stage.metrics_port,
        )
        print(f"running {len(supervisor.children)} stage processes; logs in {settings.log_dir / 'stages'}")
        for child in supervisor.children:
            if child.metrics_port:
                print(f"  {child.stage}: metrics on http://127.0.0.1:{child.metrics_port}/metrics")
        supervisor.run_forever()
        return 0
    from processors.runtime.launch import main_run_stage

    main_run_stage(args.stage, settings)
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from gateway.ops.submit import parse_file, publish

    settings = _settings(args)
    try:
        parsed = parse_file(Path(args.file))
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for error in parsed.errors:
        print(f"{args.file}: {error}", file=sys.stderr)
    if parsed.errors and not args.skip_invalid:
        print(
            f"error: {len(parsed.errors)} invalid line(s); nothing was published "
            "(fix them, or pass --skip-invalid to publish the valid lines)",
            file=sys.stderr,
        )
        return 2
    if not parsed.events:
        print("error: no events to publish", file=sys.stderr)
        return 2
    from processors.kafka_clients import DeliveryFailed

    try:
        count = publish(settings, parsed.events)
    except DeliveryFailed as exc:
        print(
            f"error: {exc}; events before the failure may have been published (intake de-duplicates "
            "on event id, so resubmitting the whole file is safe)",
            file=sys.stderr,
        )
        return 1
    skipped = f", skipped {len(parsed.errors)} invalid" if parsed.errors else ""
    print(f"published {count} event(s) to {settings.kafka.topic_prefix}catalog.events{skipped}")
    return 0


def _print_timeline(timeline: dict[str, Any]) -> None:
    print(f"job {timeline['job_id']}: {timeline['state']}")
    for event in timeline["events"]:
        reason = f"  reason={event['reason']}" if event["reason"] else ""
        detail = f"  {event['detail']}" if event["detail"] else ""
        print(
            f"  {event['at']}  {event['stage']:<11} {event['state']:<18} "
            f"{event['duration_ms']:8.1f} ms{reason}{detail}"
        )


def _event_log(args: argparse.Namespace, query: str, *query_args: Any) -> Any:
    """One event-log query; None (after saying why) when the event log cannot be reached."""
    from processors.eventlog.reader import EventLogReader, EventLogUnavailable

    reader = EventLogReader(_settings(args))
    try:
        return asyncio.run(getattr(reader, query)(*query_args))
    except EventLogUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def cmd_status(args: argparse.Namespace) -> int:
    timeline = _event_log(args, "timeline", args.job)
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
    summary = _event_log(args, "summary")
    if summary is None:
        return 1
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        from gateway.cli.report import print_summary

        print_summary(summary)
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    result = _event_log(args, "sql", args.query)
    if result is None:
        return 1
    print("\t".join(result["columns"]))
    for row in result["rows"]:
        print("\t".join(str(v) for v in row))
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    from gateway.ops.review import submit_decision

    settings = _settings(args)
    if args.decision == "reject" and not args.reason:
        print("error: a rejection needs --reason", file=sys.stderr)
        return 2
    from processors.kafka_clients import DeliveryFailed

    try:
        submit_decision(settings, args.job, args.decision.upper(), args.reviewer, args.reason or "")
    except DeliveryFailed as exc:
        print(f"error: the decision was not delivered: {exc}", file=sys.stderr)
        return 1
    print(f"{args.decision} for job {args.job} sent; `lightbox status {args.job}` shows the result")
    return 0


def cmd_lag(args: argparse.Namespace) -> int:
    from gateway.ops.lag import stage_lags

    lags = stage_lags(_settings(args))
    if args.json:
        print(json.dumps([lag.__dict__ for lag in lags], indent=2))
        return 0
    print(f"{'stage':<12} {'topic':<40} {'done':>8} {'end':>8} {'lag':>6}")
    for lag in lags:
        print(f"{lag.stage:<12} {lag.topic:<40} {lag.committed:>8} {lag.end:>8} {lag.lag:>6}")
    return 0


def cmd_dlq(args: argparse.Namespace) -> int:
    from gateway.ops import dlq

    settings = _settings(args)
    if args.action == "list":
        for letter in dlq.read(settings, partition=args.partition, limit=args.limit):
            print(dlq.describe(letter))
        return 0
    count = dlq.replay(settings, partition=args.partition, start=args.from_offset, end=args.to_offset)
    print(f"replayed {count} dead letter(s) to their original topics")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from gateway.ops.replay import ReplayError, replay_job

    try:
        new_topic, job_id = asyncio.run(
            replay_job(_settings(args), args.job, args.from_stage, args.model, args.backend)
        )
    except ReplayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"job {job_id} re-sent to {new_topic}; follow it with `lightbox status {job_id}`")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway.web.app import serve

    serve(_settings(args), host=args.host, port=args.port)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.harness.demo import run_demo

    return run_demo(
        _settings(args), products=args.products, timeout_s=args.timeout, keep_running=args.keep_running
    )


def cmd_bench(args: argparse.Namespace) -> int:
    from gateway.harness.bench import run_pipeline_bench

    return run_pipeline_bench(_settings(args), jobs=args.jobs, timeout_s=args.timeout, mode=args.mode)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightbox", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", help="YAML settings file (else LIGHTBOX_CONFIG, env, defaults)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("stack", help="install, start, stop or inspect Kafka and MinIO (no Docker needed)")
    p.add_argument(
        "action",
        choices=["up", "down", "status", "reset"],
        help="up: install once and start; down: stop, keep data; reset: stop and delete data",
    )
    p.set_defaults(func=cmd_stack)

    from processors.topology import STAGE_NAMES

    p = sub.add_parser("run", help="run one stage, or all of them as supervised processes")
    p.add_argument(
        "stage",
        choices=[*STAGE_NAMES, "all"],
        help="the stage; any number of copies share one consumer group",
    )
    p.add_argument("--copies", type=int, default=1, help="with `all`: processes per stage (default 1)")
    p.add_argument(
        "--echo", action="store_true", help="with `all`: stage logs to this terminal, not log files"
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("submit", help="publish catalog events from a JSON-lines file")
    p.add_argument("file", help="one catalog event (schemas/avro/catalog_event) per line")
    p.add_argument(
        "--skip-invalid",
        action="store_true",
        help="publish the valid lines even if some are invalid (default: publish nothing)",
    )
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("status", help="a job's state and timeline from the event log")
    p.add_argument("job", help="job id (or a catalog event id, for intake rejections)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("summary", help="jobs by state, latency percentiles, artifact rate, failure reasons")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser(
        "sql", help="run one read-only SQL query on the event log (table lightbox.pipeline_events)"
    )
    p.add_argument("query")
    p.set_defaults(func=cmd_sql)

    p = sub.add_parser("review", help="approve or reject a held asset")
    p.add_argument("decision", choices=["approve", "reject"])
    p.add_argument("job")
    p.add_argument("--reviewer", default="cli", help="who decides (recorded in the lineage)")
    p.add_argument("--reason", default="", help="why (required to reject)")
    p.set_defaults(func=cmd_review)

    p = sub.add_parser("lag", help="how far behind each stage's consumer group is")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_lag)

    p = sub.add_parser("dlq", help="inspect or replay the dead-letter topic")
    p.add_argument("action", choices=["list", "replay"])
    p.add_argument("--partition", type=int, default=None, help="one partition (default: all)")
    p.add_argument("--limit", type=int, default=50, help="with list: at most this many")
    p.add_argument("--from-offset", type=int, default=None, help="with replay: first offset (inclusive)")
    p.add_argument("--to-offset", type=int, default=None, help="with replay: last offset (inclusive)")
    p.set_defaults(func=cmd_dlq)

    p = sub.add_parser("replay", help="run a job again from a stage, optionally with another model")
    p.add_argument("job")
    p.add_argument(
        "--from-stage",
        default="generate",
        choices=["references", "prompt", "generate", "quality", "postprocess", "publish"],
    )
    p.add_argument("--model", default=None, help="with --from-stage generate: the model to use instead")
    p.add_argument("--backend", default=None, help="with --model: its backend (default: keep the route's)")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("serve", help="the HTTP gateway: POST /v1/events, GET /v1/jobs/ID, the /review page")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="start everything, run a sample catalog end to end, print a summary")
    p.add_argument("--products", type=int, default=6, help="sample products to submit (default 6)")
    p.add_argument("--timeout", type=float, default=300, help="seconds to wait for the jobs (default 300)")
    p.add_argument("--keep-running", action="store_true", help="leave the stages running after the summary")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help="benchmarks that print figures")
    p.add_argument("what", choices=["pipeline"], help="pipeline: N jobs through every stage (compositor)")
    p.add_argument("--jobs", type=int, default=40, help="jobs to run (default 40)")
    p.add_argument(
        "--mode",
        choices=["burst", "sequential"],
        default="burst",
        help="burst: all at once (throughput); sequential: one at a time (pipeline overhead)",
    )
    p.add_argument("--timeout", type=float, default=600)
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
