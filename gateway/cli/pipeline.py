"""`lightbox run` and `lightbox lag`: the stage processes and how far behind they are."""

from __future__ import annotations

import argparse
import json

from gateway.cli.common import Commands, settings_of
from processors.topology import STAGE_NAMES, STAGES


def cmd_run(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    if args.stage == "all":
        from deploy.local.supervisor import Supervisor, all_stages

        supervisor = Supervisor(
            all_stages(),
            settings.log_dir / "stages",
            copies=args.copies,
            echo=args.echo,
            metrics_base_port=settings.stage.metrics_port,
        )
        print(f"running {len(supervisor.children)} stage processes; logs in {settings.log_dir / 'stages'}")
        for child in supervisor.children:
            if child.metrics_port:
                print(f"  {child.stage}: metrics on http://127.0.0.1:{child.metrics_port}/metrics")
        supervisor.run_forever()
        return 0
    from processors.runtime.launch import main_run_stage

    main_run_stage(args.stage, settings)
    return 0


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


def _copies(text: str) -> int:
    copies = int(text)
    if copies < 1:
        raise argparse.ArgumentTypeError(f"at least 1, not {copies}")
    return copies


def register_run(commands: Commands) -> None:
    singletons = ", ".join(spec.name for spec in STAGES if spec.singleton)
    p = commands.add_parser(
        "run",
        help="run one stage, or all of them as supervised processes",
        description="Run one stage in this process, or every stage as its own supervised process "
        "(restarted if it dies; logs under LIGHTBOX_HOME/logs/stages). Any number of copies of a "
        "stage share one consumer group. `lightbox topology` shows what each stage reads and writes.",
    )
    p.add_argument("stage", choices=[*STAGE_NAMES, "all"], help="the stage, or all")
    p.add_argument(
        "--copies",
        type=_copies,
        default=1,
        help=f"with `all`: processes per stage (default 1); singletons ({singletons}) always run once",
    )
    p.add_argument(
        "--echo", action="store_true", help="with `all`: stage logs to this terminal, not log files"
    )
    p.set_defaults(func=cmd_run)


def register_lag(commands: Commands) -> None:
    p = commands.add_parser(
        "lag",
        help="how far behind each stage's consumer group is",
        description="Per stage and input topic: messages its consumer group has committed, the "
        "topic's end offsets, and the difference (lag), summed over partitions.",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_lag)
