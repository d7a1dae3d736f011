"""The `lightbox` command. `lightbox --help` and `lightbox COMMAND --help` explain each part.

Each group of commands lives in its own module under gateway/cli/ and registers itself here;
heavy imports (Kafka, ClickHouse, the stages) happen inside the command that needs them, so
`--help` and `topology` stay fast.
"""

from __future__ import annotations

import argparse
import sys

from gateway.cli import (
    chaos,
    credits,
    dlq,
    eventlog,
    harness,
    jobs,
    keys,
    metrics,
    pipeline,
    replay,
    schemas,
    stack,
    tokens,
    topology,
)

DESCRIPTION = """\
Lightbox: catalog events in, generated, quality-checked, traceable product images out.

Typical first run on a fresh machine:
  lightbox demo              start the stack and every stage, run a sample catalog, print a summary

Day to day:
  lightbox stack up          install (once) and start Kafka and MinIO on loopback
  lightbox run all           run every stage (or `lightbox run STAGE` for one)
  lightbox ps                the supervised processes: pid, state, restarts, last error
  lightbox topology          the flow: what each stage reads and writes, consumer groups
  lightbox submit FILE       publish catalog events from a JSON-lines file
  lightbox status JOB        a job's state and timeline from the event log
  lightbox summary           jobs by state, p50/p95 latency, artifact rate, failure reasons
  lightbox metrics           figures per stage/model/backend/template/campaign: yield, p95, cost
  lightbox credits           credits reserved, consumed and released per account
  lightbox review approve|reject JOB   decide on a held asset
  lightbox lag               consumer lag per stage
  lightbox dlq ls|show|list|replay   count, inspect and replay dead letters
  lightbox replay --stage S --job ID|--where COND [--set k=v]   jobs again from a stage
  lightbox compare JOB_A JOB_B   two jobs side by side: images, scores, what changed
  lightbox serve             HTTP gateway for systems without Kafka, and the review page
  lightbox verify FILE       check a published file's content credentials, print its lineage
  lightbox chaos             kill stages, MinIO and the broker while jobs run; check nothing is lost
  lightbox schemas check     are the working tree's Avro schemas compatible with the registry?
  lightbox keys init         make a local TEST signing chain (production configures a real one)
  lightbox tokens create     make an API token for the HTTP gateway, with a role

Configuration: LIGHTBOX_* environment variables or a YAML file (--config / LIGHTBOX_CONFIG);
see README.md, "Configuration".
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightbox", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", help="YAML settings file (else LIGHTBOX_CONFIG, env, defaults)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # In the order `lightbox --help` lists them.
    stack.register(commands)
    pipeline.register_run(commands)
    pipeline.register_ps(commands)
    topology.register(commands)
    jobs.register_submit(commands)
    eventlog.register(commands)
    metrics.register(commands)
    credits.register(commands)
    jobs.register_review(commands)
    pipeline.register_lag(commands)
    dlq.register(commands)
    replay.register_replay(commands)
    replay.register_compare(commands)
    harness.register_serve(commands)
    harness.register_runs(commands)
    chaos.register(commands)
    schemas.register(commands)
    keys.register(commands)
    tokens.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
