"""`lightbox run` and `lightbox lag`: the stage processes and how far behind they are."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from gateway.cli.common import Commands, settings_of
from processors.topology import STAGE_NAMES, STAGES

if TYPE_CHECKING:
    from deploy.local.supervisor import Copies


def cmd_run(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    if args.stage == "all":
        from deploy.local.supervisor import Supervisor, all_stages, state_file_of

        try:
            supervisor = Supervisor(
                all_stages(),
                settings.log_dir / "stages",
                copies=merged_copies(settings.supervisor.copies, args.copies),
                echo=args.echo,
                metrics_base_port=settings.stage.metrics_port,
                settings=settings.supervisor,
                state_file=state_file_of(settings.home),
            )
        except ValueError as exc:  # supervisor.copies names no stage, or a count under 1
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(
            f"running {len(supervisor.children)} stage processes; logs in {settings.log_dir / 'stages'}; "
            "`lightbox ps` lists them"
        )
        for child in supervisor.children:
            if child.metrics_port:
                print(f"  {child.name}: metrics on http://127.0.0.1:{child.metrics_port}/metrics")
        supervisor.run_forever()
        return 0
    from processors.runtime.launch import main_run_stage

    main_run_stage(args.stage, settings)
    return 0


def cmd_ps(args: argparse.Namespace) -> int:
    from gateway.ops.processes import read_processes

    settings = settings_of(args)
    try:
        report = read_processes(settings.home)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
        return 0 if report.supervisor_running else 1
    print(report.headline())
    if report.processes:
        print(f"{'process':<14} {'pid':>8} {'state':<11} {'restarts':>8} {'up':>8}  last error")
        for row in report.processes:
            print(
                f"{row.name:<14} {row.pid or '-':>8} {row.state:<11} {row.restarts:>8} {row.uptime():>8}  "
                f"{row.last_error or '-'}"
            )
    return 0 if report.supervisor_running else 1


def cmd_lag(args: argparse.Namespace) -> int:
    from gateway.ops.lag import stage_lags

    lags = stage_lags(settings_of(args))
    if args.json:
        print(json.dumps([lag.__dict__ for lag in lags], indent=2))
        return 0
    print(f"{'stage':<12} {'topic':<40} {'done':>8} {'end':>8} {'lag':>6}")
    for lag in lags:
        print(f"{lag.stage:<12} {lag.topic:<40} {lag.committed:>8} {lag.end:>8} {lag.lag:>6}")
    return 0


def copies_arg(text: str) -> Copies:
    """`--copies N` or `--copies stage=N,...` (deploy/local/supervisor.parse_copies)."""
    from deploy.local.supervisor import parse_copies

    try:
        return parse_copies(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def merged_copies(configured: dict[str, int], given: Copies | None) -> Copies:
    """What runs: a plain N from the command line replaces supervisor.copies; stage=N adds to it."""
    if given is None:
        return dict(configured)
    if isinstance(given, int):
        return given
    return {**configured, **given}


def register_run(commands: Commands) -> None:
    singletons = ", ".join(spec.name for spec in STAGES if spec.singleton)
    p = commands.add_parser(
        "run",
        help="run one stage, or all of them as supervised processes",
        description="Run one stage in this process, or every stage as its own supervised process "
        "(logs under LIGHTBOX_HOME/logs/stages). With `all`, a stage that dies is restarted with "
        "capped exponential backoff (supervisor.restart_initial_s .. restart_max_s) and each restart "
        "is printed with its exit code and log tail; the other stages keep running. Only a stage that "
        "fails supervisor.first_start_attempts times without ever starting (a configuration error) "
        "stops `run all`. `lightbox ps` lists the processes, their restarts and last errors. Any "
        "number of copies of a stage share one consumer group. `lightbox topology` shows what each "
        "stage reads and writes.",
    )
    p.add_argument("stage", choices=[*STAGE_NAMES, "all"], help="the stage, or all")
    p.add_argument(
        "--copies",
        type=copies_arg,
        default=None,
        metavar="N|STAGE=N,...",
        help="with `all`: processes per stage: N for every stage, or STAGE=N,... for those stages "
        "(added to supervisor.copies; the rest run once; default: supervisor.copies, else one each); "
        f"singletons ({singletons}) always run once",
    )
    p.add_argument(
        "--echo",
        action="store_true",
        help="with `all`: also print every stage's log here, each line prefixed by its process",
    )
    p.set_defaults(func=cmd_run)


def register_ps(commands: Commands) -> None:
    p = commands.add_parser(
        "ps",
        help="the processes `lightbox run all` supervises: pid, state, restarts, last error",
        description="Read the state `lightbox run all` keeps under LIGHTBOX_HOME/run/supervisor.json: "
        "each stage process, its pid, state (starting, running, restarting: waiting out its "
        "backoff, stopped, failed), how often it was restarted and why it last died. Exits 1 when "
        "no `run all` is running (the last state it wrote is still shown).",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_ps)


def register_lag(commands: Commands) -> None:
    p = commands.add_parser(
        "lag",
        help="how far behind each stage's consumer group is",
        description="Per stage and input topic: messages its consumer group has committed, the "
        "topic's end offsets, and the difference (lag), summed over partitions.",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_lag)
