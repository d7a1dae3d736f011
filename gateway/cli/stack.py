"""`lightbox stack`: the local Kafka and MinIO."""

from __future__ import annotations

import argparse
import sys

from gateway.cli.common import Commands, settings_of


def cmd_stack(args: argparse.Namespace) -> int:
    from deploy.local.stack import LocalStack, StackError

    stack = LocalStack(settings_of(args))
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


def register(commands: Commands) -> None:
    p = commands.add_parser(
        "stack", help="install, start, stop or inspect Kafka and MinIO (no Docker needed)"
    )
    p.add_argument(
        "action",
        choices=["up", "down", "status", "reset"],
        help="up: install once and start; down: stop, keep data; reset: stop and delete data",
    )
    p.set_defaults(func=cmd_stack)
