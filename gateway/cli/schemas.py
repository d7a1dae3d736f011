"""`lightbox schemas check|register|unregister`: the working tree's Avro schemas against the registry."""

from __future__ import annotations

import argparse

from gateway.cli.common import Commands, settings_of


def cmd_schemas(args: argparse.Namespace) -> int:
    from schemas.compat import run

    # 0: compatible / registered; 1: incompatible (the registry's message is printed); 2: unreachable.
    return run(settings_of(args), args.action)


def register(commands: Commands) -> None:
    p = commands.add_parser(
        "schemas",
        help="check or register the Avro schemas with the schema registry",
        description="Every topic carries Confluent-framed Avro; its subject is <prefix><topic>-value "
        "with the compatibility rule of registry.compatibility (BACKWARD by default).",
    )
    p.add_argument(
        "action",
        choices=["check", "register", "unregister"],
        help="check: are the working tree's versions registered, and would the registry accept the "
        "new ones?; register: register them oldest first, refusing an incompatible change; "
        "unregister: delete this topic prefix's subjects (test sessions, benchmarks)",
    )
    p.set_defaults(func=cmd_schemas)
