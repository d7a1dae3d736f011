"""`lightbox tokens create|list|revoke`: the API tokens the HTTP gateway accepts (gateway/ops/tokens.py)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from gateway.cli.common import Commands, settings_of
from gateway.ops.tokens import Role, TokenError, TokenStore


def _store(args: argparse.Namespace) -> TokenStore:
    return TokenStore.of(settings_of(args))


def cmd_tokens_create(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        record, token = store.create(args.name, args.role)
    except (TokenError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # The token alone on stdout, so `TOKEN=$(lightbox tokens create ...)` captures it.
    print(token)
    print(
        f"made token {record.token_id} for {record.name} (role {record.role}) in {store.path}. "
        "It is shown this once and stored only hashed: keep it now.",
        file=sys.stderr,
    )
    return 0


def _when(ms: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ms / 1000)) if ms else "-"


def cmd_tokens_list(args: argparse.Namespace) -> int:
    records = [r for r in _store(args).load() if args.all or r.active]
    if args.json:
        print(json.dumps([r.public() for r in records], indent=2))
        return 0
    if not records:
        print("no tokens (lightbox tokens create --name NAME --role ROLE)")
        return 0
    print(f"{'id':<17} {'name':<24} {'role':<10} {'created (UTC)':<17} revoked")
    for r in records:
        created, revoked = _when(r.created_at), _when(r.revoked_at)
        print(f"{r.token_id:<17} {r.name[:24]:<24} {r.role!s:<10} {created:<17} {revoked}")
    return 0


def cmd_tokens_revoke(args: argparse.Namespace) -> int:
    try:
        revoked = _store(args).revoke(args.which)
    except TokenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for record in revoked:
        print(f"revoked {record.token_id} ({record.name}, {record.role})")
    return 0


def register(commands: Commands) -> None:
    p = commands.add_parser(
        "tokens",
        help="API tokens for the HTTP gateway: create (shown once), list, revoke",
        description="Every gateway route needs a token with a role: submitter (POST requests), "
        "reviewer (approve or reject), sre (replay, metrics), analyst (read jobs, summaries, "
        "metrics), admin (everything). Tokens are stored hashed in gateway.tokens_file "
        "(default LIGHTBOX_HOME/gateway/tokens.json, mode 0600); the gateway sees changes at once.",
    )
    sub = p.add_subparsers(dest="tokens_command", required=True, metavar="ACTION")
    create = sub.add_parser("create", help="make a token and print it (once)")
    create.add_argument("--name", required=True, help="who it is for: recorded as the reviewer of decisions")
    create.add_argument("--role", required=True, choices=[str(r) for r in Role])
    create.set_defaults(func=cmd_tokens_create)
    listing = sub.add_parser("list", help="tokens, without their secrets")
    listing.add_argument("--all", action="store_true", help="include revoked tokens")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_tokens_list)
    revoke = sub.add_parser("revoke", help="revoke a token by id, or every token of a name")
    revoke.add_argument("which", help="a token id (from `tokens list`) or a name")
    revoke.set_defaults(func=cmd_tokens_revoke)
