"""`lightbox keys init|show` (the signing chain) and `lightbox verify FILE` (a file's content
credentials). See docs/provenance.md."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gateway.cli.common import Commands, settings_of
from processors.provenance.keys import (
    ALGS,
    ChainPaths,
    describe_chain,
    init_test_chain,
    test_chain_dir,
    trust_anchors_of,
)


def cmd_keys_init(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    directory = Path(args.dir).expanduser() if args.dir else test_chain_dir(settings)
    try:
        paths = init_test_chain(directory, args.alg, force=args.force)
    except FileExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"made a TEST signing chain ({args.alg}) in {paths.directory}:")
    print(f"  {paths.chain}  signer certificate + test CA (the chain embedded in each manifest)")
    print(f"  {paths.key}  signer private key (mode 0600)")
    print(f"  {paths.ca}  test CA certificate: give it to `lightbox verify --trust` elsewhere")
    print(
        "For testing only: no one trusts this CA. In production set provenance.cert_path and "
        "provenance.key_path to a chain from a CA on the C2PA trust list."
    )
    if args.dir:
        default = test_chain_dir(settings)
        print(f"(published files are signed with {default} unless provenance.cert_path says so)")
    return 0


def cmd_keys_show(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    provenance = settings.provenance
    chain_path = Path(provenance.cert_path).expanduser() if provenance.cert_path else None
    chain_path = chain_path or ChainPaths(test_chain_dir(settings)).chain
    if not chain_path.is_file():
        print(f"no signing chain at {chain_path}: run `lightbox keys init`", file=sys.stderr)
        return 1
    report = {
        "signing": provenance.sign,
        "alg": provenance.alg,
        "chain": str(chain_path),
        "test_chain": not provenance.cert_path,
        "certificates": describe_chain(chain_path.read_bytes()),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    kind = "TEST chain" if report["test_chain"] else "configured chain"
    print(f"{kind} {chain_path} ({provenance.alg}; signing {'on' if provenance.sign else 'off'})")
    for cert in report["certificates"]:
        print(f"  {cert['subject']}  issued by {cert['issuer']}  until {cert['not_after']}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from processors.provenance.verify import format_report, verify_bytes

    settings = settings_of(args)
    try:
        anchors, origin = trust_anchors_of(settings, args.trust)
    except OSError as exc:
        print(f"error: cannot read the trust anchors: {exc}", file=sys.stderr)
        return 2
    worst = 0
    reports = []
    for name in args.files:
        try:
            data = Path(name).read_bytes()
        except OSError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        verification = verify_bytes(data, trust_anchors_pem=anchors)
        worst = max(worst, 0 if verification.ok else 1)
        reports.append((name, verification))
    if args.json:
        out = [{"file": name, **v.to_dict(), "trust_anchors": origin} for name, v in reports]
        print(json.dumps(out[0] if len(out) == 1 else out, indent=2, default=str))
    else:
        for name, verification in reports:
            print(format_report(verification, name))
        print(f"(trusting {origin})")
    return worst


def register(commands: Commands) -> None:
    keys = commands.add_parser(
        "keys",
        help="the signing chain for content credentials",
        description="Published files carry a C2PA manifest signed with the project's key. "
        "`keys init` makes a local TEST chain (a test CA and a signer certificate); production "
        "configures provenance.cert_path and provenance.key_path instead.",
    )
    sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    init = sub.add_parser("init", help="make a local TEST signing chain (for development and tests)")
    init.add_argument("--alg", choices=ALGS, default="ES256", help="signature algorithm (default ES256)")
    init.add_argument("--dir", help="where to write it (default <home>/keys, what signing uses)")
    init.add_argument("--force", action="store_true", help="replace an existing chain")
    init.set_defaults(func=cmd_keys_init)
    show = sub.add_parser("show", help="the chain published files are signed with")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_keys_show)

    verify = commands.add_parser(
        "verify",
        help="check a file's content credentials and print its lineage",
        description="Validate the C2PA manifest of each FILE (signature, hashes, signer trust) and "
        "print how it was made. Exit status 0 when every file is intact and signed by a trusted "
        "signer, 1 otherwise.",
    )
    verify.add_argument("files", nargs="+", metavar="FILE")
    verify.add_argument("--trust", help="PEM bundle of trusted root certificates (default: see docs)")
    verify.add_argument("--json", action="store_true", help="the full report as JSON")
    verify.set_defaults(func=cmd_verify)
