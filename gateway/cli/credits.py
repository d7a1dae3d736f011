"""`lightbox credits`: per credit account, what intake reserved and what the jobs' terminal events
consumed and released, from the event log (processors/eventlog/sql/credits_by_account.sql), beside
each account's configured budget (`credits.accounts`). docs/decisions.md, "Credits"."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from gateway.cli.common import Commands, settings_of
from gateway.cli.metrics import since_ms_of

HELP = """\
Per credit account: credits reserved by intake for the jobs it accepted, consumed by delivered
(published) jobs, released by failed, rejected or dead-lettered ones, and what is still
outstanding (reserved - consumed - released), beside the configured budget and what is committed
against it (reserved - released). Accounts are configured under credits.accounts; an account with
a budget but no jobs yet is listed with zeros. Needs the event log (`lightbox run eventlog`)."""


def register(commands: Commands) -> None:
    parser = commands.add_parser(
        "credits",
        help="credits reserved, consumed and released per account",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--since",
        default="all",
        help="only jobs reserved in this span: 30m, 1h, 7d, 2w, or 'all' (default)",
    )
    parser.add_argument("--json", action="store_true", help="print the accounts as JSON")
    parser.set_defaults(func=cmd_credits)


def accounts_of(rows: list[dict[str, Any]], budgets: dict[str, float]) -> list[dict[str, Any]]:
    """One entry per account, in name order: the event log's figures and the configured budget."""
    by_name = {str(row["account"]): row for row in rows}
    result = []
    for name in sorted(set(by_name) | set(budgets)):
        row = by_name.get(name, {})
        reserved = float(row.get("reserved") or 0.0)
        consumed = float(row.get("consumed") or 0.0)
        released = float(row.get("released") or 0.0)
        result.append(
            {
                "account": name,
                "budget": budgets.get(name),  # None: no longer configured
                "reserved": reserved,
                "consumed": consumed,
                "released": released,
                "outstanding": reserved - consumed - released,
                "committed": reserved - released,
            }
        )
    return result


async def _rows(settings: Any, since_ms: int) -> list[dict[str, Any]]:
    from processors.eventlog import named
    from processors.eventlog.reader import EventLogReader

    async with EventLogReader(settings) as reader:
        text = named.render("credits_by_account", database=reader.database, since_ms=since_ms)
        return named.rows_of(await reader.sql(text))


def cmd_credits(args: argparse.Namespace) -> int:
    from processors.eventlog.reader import EventLogError

    try:
        since_ms = since_ms_of(args.since, int(time.time() * 1000))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings = settings_of(args)
    try:
        rows = asyncio.run(_rows(settings, since_ms))
    except EventLogError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    budgets = {name: account.budget for name, account in settings.credits.accounts.items()}
    accounts = accounts_of(rows, budgets)
    if args.json:
        print(json.dumps({"since": args.since, "accounts": accounts}, indent=2))
        return 0
    if not accounts:
        print("no credit accounts configured (credits.accounts) and none in the event log")
        return 0
    print(
        f"{'account':<24} {'budget':>10} {'committed':>10} {'reserved':>10} {'consumed':>10} "
        f"{'released':>10} {'outstanding':>11}"
    )
    for a in accounts:
        budget = "-" if a["budget"] is None else f"{a['budget']:g}"
        print(
            f"{a['account']:<24} {budget:>10} {a['committed']:>10g} {a['reserved']:>10g} "
            f"{a['consumed']:>10g} {a['released']:>10g} {a['outstanding']:>11g}"
        )
    return 0
