"""What every command needs: its settings, and one way to ask the event log."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import Any

from processors.config import Settings, load_settings

# argparse's subparsers object (it has no public name): each command module adds its commands to it.
Commands = argparse._SubParsersAction


def settings_of(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def event_log(args: argparse.Namespace, query: str, *query_args: Any) -> Any:
    """One event-log query; None (after saying why) when the event log cannot be reached."""
    from processors.eventlog.reader import EventLogError, EventLogReader

    reader = EventLogReader(settings_of(args))
    try:
        return asyncio.run(getattr(reader, query)(*query_args))
    except EventLogError as exc:  # unreachable, or a query refused or stopped (it says which)
        print(f"error: {exc}", file=sys.stderr)
        return None


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum``, else a usage error that says so."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"at least {minimum}, not {value}")
        return value

    return parse


def positive_seconds(text: str) -> float:
    """An argparse type: a number of seconds above 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"more than 0 seconds, not {text}")
    return value
