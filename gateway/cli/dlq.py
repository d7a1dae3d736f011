"""`lightbox dlq`: inspect and replay the dead-letter topic."""

from __future__ import annotations

import argparse

from gateway.cli.common import Commands, settings_of


def cmd_dlq(args: argparse.Namespace) -> int:
    from gateway.ops import dlq

    settings = settings_of(args)
    if args.action == "list":
        for letter in dlq.read(settings, partition=args.partition, limit=args.limit):
            print(dlq.describe(letter))
        return 0
    count = dlq.replay(settings, partition=args.partition, start=args.from_offset, end=args.to_offset)
    print(f"replayed {count} dead letter(s) to their original topics")
    return 0


def register(commands: Commands) -> None:
    p = commands.add_parser(
        "dlq",
        help="inspect or replay the dead-letter topic",
        description="list: dead letters with their original topic/partition/offset, stage and "
        "error. replay: send them back to their original topics (fix the cause first).",
    )
    p.add_argument("action", choices=["list", "replay"])
    p.add_argument("--partition", type=int, default=None, help="one partition (default: all)")
    p.add_argument("--limit", type=int, default=50, help="with list: at most this many")
    p.add_argument("--from-offset", type=int, default=None, help="with replay: first offset (inclusive)")
    p.add_argument("--to-offset", type=int, default=None, help="with replay: last offset (inclusive)")
    p.set_defaults(func=cmd_dlq)
