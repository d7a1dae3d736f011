"""The fault-injection suite: a seeded plan of kills and outages against a running pipeline, and
the checks that prove nothing was lost, duplicated or wrongly dead-lettered.

    plan.py         the schedule, from the seed alone
    stacks.py       the stack it breaks (a private one by default) and how
    supervision.py  two replicas of every stage, and a watcher telling planned exits from crashes
    injector.py     one planned action carried out, counted
    topics.py       topics read directly (no consumer group)
    evidence.py     topics, event log and object store gathered for the checker
    checker.py      the checks and the figures
    run.py          one run, start to finish, and its table

`lightbox chaos` (gateway/cli/chaos.py) and tests/chaos/ run it.
"""

from gateway.harness.chaos.run import ChaosOptions, ChaosResult, format_result, run_chaos

__all__ = ["ChaosOptions", "ChaosResult", "format_result", "run_chaos"]
