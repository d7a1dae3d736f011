"""`lightbox chaos`: the fault-injection suite against a live pipeline, with its figures."""

from __future__ import annotations

import argparse

from gateway.cli.common import Commands, int_at_least, settings_of

LONG_ROUNDS = 100
JOBS_PER_LONG_ROUND = 2


def cmd_chaos(args: argparse.Namespace) -> int:
    from gateway.harness.chaos import ChaosOptions, format_result, run_chaos

    rounds = args.rounds if args.rounds is not None else (LONG_ROUNDS if args.long else 3)
    jobs = args.jobs if args.jobs is not None else (JOBS_PER_LONG_ROUND * rounds if args.long else 12)
    options = ChaosOptions(
        seed=args.seed,
        rounds=rounds,
        jobs=jobs,
        long=args.long,
        shared_stack=args.shared_stack,
        keep=args.keep,
        finish_timeout_s=args.timeout,
    )
    result = run_chaos(settings_of(args), options)
    print()
    print(format_result(result))
    return 0 if result.ok else 1


def register(commands: Commands) -> None:
    p = commands.add_parser(
        "chaos",
        help="kill stages, freeze and stop MinIO, kill the broker while jobs run; check nothing was lost",
        description="Submit N jobs to a pipeline of two replicas per stage (the event-log sink once) and, "
        "by a seeded plan, in rounds: SIGKILL stage processes, kill the event-log sink, freeze (SIGSTOP) "
        "and stop MinIO, SIGKILL the broker, bringing each back. Then check, from the topics, the event "
        "log and the object store: every job ended exactly once, one published record and one set of "
        "files per job, no stage given up on or crashed, no outage in the dead-letter topic. Runs on a "
        "private stack of its own (own home, ports and data; the tool cache is shared) unless "
        "--shared-stack. Exit status 1 when a check fails. docs/reliability.md has the figures.",
    )
    p.add_argument("--seed", type=int, default=1, help="the plan's seed (default 1): same seed, same plan")
    p.add_argument("--rounds", type=int_at_least(1), help="rounds of faults (default 3; 100 with --long)")
    p.add_argument(
        "--jobs",
        type=int_at_least(1),
        help="jobs to submit, spread over the rounds (default 12; 2 a round with --long)",
    )
    p.add_argument(
        "--long",
        action="store_true",
        help="the long profile: 100 rounds, longer outages, broker kills not capped at one",
    )
    p.add_argument(
        "--shared-stack",
        action="store_true",
        help="break the configured stack (everyone using it feels the broker kill) instead of a private one",
    )
    p.add_argument("--keep", action="store_true", help="keep the private stack's data afterwards")
    p.add_argument(
        "--timeout",
        type=float,
        help="seconds for the jobs to end after the last round (default 240; 900 with --long)",
    )
    p.set_defaults(func=cmd_chaos)
