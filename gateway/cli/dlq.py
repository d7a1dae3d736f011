"""`lightbox dlq`: count, show, list and replay the dead-letter topic (gateway/ops/dlq.py)."""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from gateway.cli.common import Commands, settings_of


class ProgressLine:
    """A progress bar on stderr when it is a terminal; otherwise a plain line every tenth of the
    way (logs and CI keep a readable record without carriage returns)."""

    WIDTH = 30

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self.last_step = -1

    def __call__(self, done: int, total: int) -> None:
        share = done / total if total else 1.0
        rate = done / max(time.monotonic() - self.started, 1e-6)
        text = f"{done}/{total} offsets ({share:.0%}, {rate:.0f}/s)"
        if self.tty:
            filled = int(share * self.WIDTH)
            self.stream.write(f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] {text}")
            if done >= total:
                self.stream.write("\n")
        elif (step := int(share * 10)) > self.last_step:
            self.last_step = step
            self.stream.write(f"replay progress: {text}\n")
        self.stream.flush()


def _print_summary(summary: dict[str, Any]) -> None:
    print(
        f"{summary['total']} dead letter(s) in {summary['topic']}: {summary['parked']} parked "
        f"(dlq.max_replays {summary['max_replays']}), {summary['replayed']} already replayed"
    )
    if not summary["groups"]:
        return
    header = f"{'part':>4}  {'stage':<12} {'error class':<24} {'count':>6} {'parked':>6} {'replayed':>8}"
    print(f"{header}  oldest → newest")
    for g in summary["groups"]:
        print(
            f"{g['partition']:>4}  {g['stage']:<12} {g['error_class']:<24} {g['count']:>6} {g['parked']:>6} "
            f"{g['replayed']:>8}  @{g['oldest']['offset']} {g['oldest']['at']} → "
            f"@{g['newest']['offset']} {g['newest']['at']}"
        )


def _reporting(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """The command, with what stops it said in one line (exit 1), not a traceback: the broker or
    the object store (the replay ledger) unreachable, a partition or offset that is not there."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        from confluent_kafka import KafkaException
        from minio.error import MinioException
        from urllib3.exceptions import HTTPError

        try:
            return command(args)
        except LookupError as exc:
            print(f"error: {exc}", file=sys.stderr)
        except KafkaException as exc:
            print(f"error: Kafka at {settings_of(args).kafka.bootstrap}: {exc}", file=sys.stderr)
        except (MinioException, HTTPError, OSError) as exc:
            print(f"error: object storage (the replay ledger): {exc}", file=sys.stderr)
        return 1

    return run


def cmd_ls(args: argparse.Namespace) -> int:
    from gateway.ops import dlq

    summary = dlq.summarize(settings_of(args))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _print_summary(summary)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from gateway.ops import dlq

    settings = settings_of(args)
    for letter in dlq.read(settings, partition=args.partition, limit=args.limit):
        print(dlq.describe(letter, settings.dlq.max_replays))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from gateway.ops import dlq

    try:
        shown = dlq.show(settings_of(args), args.partition, args.offset)
    except LookupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(shown, indent=2, default=str))
        return 0
    print("envelope:")
    for key, value in shown["envelope"].items():
        print(f"  {key}: {value}")
    print(f"  parked: {shown['parked']}")
    print("headers:")
    for key, value in shown["headers"].items():
        print(f"  {key}: {value}")
    original = shown["original"]
    print(f"original (key {original['key']!r}, {original['size']} bytes):")
    if "record" in original:
        print(json.dumps(original["record"], indent=2, default=str))
    else:
        print(f"  not decodable: {original['undecodable']}")
        print(f"  bytes: {original['bytes_preview']}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from gateway.ops import dlq
    from processors.kafka_clients import DeliveryFailed

    if args.rate is not None and args.rate <= 0:
        print("error: --rate must be a positive number of messages per second", file=sys.stderr)
        return 2
    if None not in (args.from_offset, args.to_offset) and args.from_offset > args.to_offset:
        print("error: --from-offset is after --to-offset", file=sys.stderr)
        return 2
    try:
        report = dlq.replay(
            settings_of(args),
            partition=args.partition,
            start=args.from_offset,
            end=args.to_offset,
            selection=dlq.Selection(args.stage, args.error_class),
            rate=args.rate,
            dry_run=args.dry_run,
            reason=args.reason,
            progress=None if args.dry_run else ProgressLine(),
        )
    except DeliveryFailed as exc:
        print(
            f"error: {exc}; the chunk that failed is not in the ledger: run the replay again", file=sys.stderr
        )
        return 1
    verb = "would replay" if report.dry_run else "replayed"
    _some(report.replayed if report.dry_run else [], "would replay {}")
    _some(report.already, "skipped {}: already replayed")
    _some(report.parked, "skipped {}")
    print(
        f"{verb} {report.count} dead letter(s) to their original topics"
        + (f" (replay id {report.replay_id})" if not report.dry_run else "; nothing was sent")
        + f"; skipped {len(report.already)} already replayed, {len(report.parked)} parked"
        + (f", {report.filtered} not matching --stage/--error-class" if report.filtered else "")
    )
    return 0


# Lines per kind (would replay, skipped ...) before the rest is only counted.
SHOWN_LINES = 50


def _some(lines: list[str], template: str) -> None:
    for line in lines[:SHOWN_LINES]:
        print(template.format(line))
    if len(lines) > SHOWN_LINES:
        print(f"... and {len(lines) - SHOWN_LINES} more")


def register(commands: Commands) -> None:
    p = commands.add_parser(
        "dlq",
        help="count, show, list or replay the dead-letter topic",
        description="Dead letters (pipeline.dlq) carry the original message and why it failed. "
        "ls: counts; show: one letter decoded; list: one line per letter; replay: send them back to "
        "their original topics once the cause is fixed (a ledger makes a second replay of a range "
        "send nothing; a letter that failed again after dlq.max_replays replays is parked).",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    ls = actions.add_parser(
        "ls",
        help="counts by partition, stage and error class, oldest and newest",
        description="Counts of dead letters by dlq partition, stage and error class, with the oldest "
        "and newest of each (offset and when it was dead-lettered), parked and already-replayed letters.",
    )
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=_reporting(cmd_ls))

    show = actions.add_parser(
        "show",
        help="one dead letter decoded, with its headers",
        description="The letter at PARTITION/OFFSET of pipeline.dlq: its envelope, every header, and "
        "the original record decoded with its topic's schema (or why it does not decode).",
    )
    show.add_argument("--partition", type=int, required=True, help="dlq partition")
    show.add_argument("--offset", type=int, required=True, help="dlq offset")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=_reporting(cmd_show))

    listing = actions.add_parser("list", help="one line per dead letter", description="One line per letter.")
    listing.add_argument("--partition", type=int, default=None, help="one partition (default: all)")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    listing.set_defaults(func=_reporting(cmd_list))

    replay = actions.add_parser(
        "replay",
        help="send dead letters back to their original topics",
        description="Re-produce each selected letter's original key and bytes to its original topic, "
        "with a replay id and replay count header. Letters already replayed (the ledger) and parked "
        "letters are skipped and said so; each replay is a dlq_replayed event in the event log.",
    )
    replay.add_argument("--partition", type=int, default=None, help="dlq partition (default: all)")
    replay.add_argument("--from-offset", type=int, default=None, help="first dlq offset (inclusive)")
    replay.add_argument("--to-offset", type=int, default=None, help="last dlq offset (inclusive)")
    replay.add_argument("--stage", default=None, help="only letters this stage dead-lettered")
    replay.add_argument("--error-class", default=None, help="only letters with this error class")
    replay.add_argument("--rate", type=float, default=None, help="at most N messages per second")
    replay.add_argument("--reason", default="operator replay", help="why, recorded with each replay event")
    replay.add_argument("--dry-run", action="store_true", help="print what would be replayed; change nothing")
    replay.set_defaults(func=_reporting(cmd_replay))
