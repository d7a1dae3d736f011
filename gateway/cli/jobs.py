"""Commands that send work in: `submit` (catalog events), `review` (a decision); `replay` is in replay.py."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway.cli.common import Commands, settings_of


def cmd_submit(args: argparse.Namespace) -> int:
    from gateway.ops.submit import parse_file, publish

    settings = settings_of(args)
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


def cmd_review(args: argparse.Namespace) -> int:
    from gateway.ops.entry import EntryError, check_review
    from gateway.ops.review import submit_decision

    settings = settings_of(args)
    if args.decision == "reject" and not args.reason:
        print("error: a rejection needs --reason", file=sys.stderr)
        return 2
    try:
        # At entry, before a producer is even made: a 1 MB reason never reaches the broker.
        check_review(settings.review, args.job, args.reviewer, args.reason or "")
    except EntryError as exc:
        print(f"error: {_option(exc.field)}: {exc.detail}", file=sys.stderr)
        return 2
    from processors.kafka_clients import DeliveryFailed

    try:
        submit_decision(settings, args.job, args.decision.upper(), args.reviewer, args.reason or "")
    except DeliveryFailed as exc:
        print(f"error: the decision was not delivered: {exc}", file=sys.stderr)
        return 1
    print(f"{args.decision} for job {args.job} sent; `lightbox status {args.job}` shows the result")
    return 0


def _option(field: str) -> str:
    """How the user typed the field: `--reason`, or the JOB argument."""
    return "JOB" if field == "job_id" else f"--{field}"


def register_submit(commands: Commands) -> None:
    p = commands.add_parser(
        "submit",
        help="publish catalog events from a JSON-lines file",
        description="Validate every line against the catalog event schema, then publish them all "
        "to catalog.events keyed by SKU. An invalid line stops the whole file unless --skip-invalid.",
    )
    p.add_argument("file", help="one catalog event (schemas/avro/catalog_event) per line")
    p.add_argument(
        "--skip-invalid",
        action="store_true",
        help="publish the valid lines even if some are invalid (default: publish nothing)",
    )
    p.set_defaults(func=cmd_submit)


def register_review(commands: Commands) -> None:
    p = commands.add_parser(
        "review",
        help="approve or reject a held asset",
        description="Send a decision for a held job to review.decisions; the publish stage acts on "
        "it (the first decision wins; a later one is recorded as decision_ignored).",
    )
    p.add_argument("decision", choices=["approve", "reject"])
    p.add_argument("job", help="the held job's id")
    p.add_argument(
        "--reviewer", default="cli", help="who decides (recorded in the lineage; review.max_reviewer_chars)"
    )
    p.add_argument("--reason", default="", help="why (required to reject; at most review.max_reason_chars)")
    p.set_defaults(func=cmd_review)
