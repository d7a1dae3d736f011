"""One chaos run: a stack, the pipeline in two replicas, the seeded plan carried out while jobs
flow, then the checks, and the figures.

    result = run_chaos(load_settings(), ChaosOptions(seed=7, rounds=3, jobs=12))
    print(format_result(result)); assert result.ok
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.local.session import StaticServer, expected_job_ids
from gateway.harness.chaos.checker import Check, Tally, run_checks, tally
from gateway.harness.chaos.evidence import collect
from gateway.harness.chaos.injector import FaultLog, Injector
from gateway.harness.chaos.plan import CI, LONG, Round, make_plan
from gateway.harness.chaos.stacks import ChaosStack, stage_env
from gateway.harness.chaos.supervision import ReplicatedSession, Watcher, wait_until
from gateway.harness.chaos.topics import EventFeed
from gateway.harness.sample_catalog import catalog_events, make_sample_products
from gateway.ops.lag import stage_lags
from processors.config import Settings
from processors.job_states import is_terminal
from processors.topology import STAGES

REPLICAS = 2
RESTART_GRACE_S = 90.0  # above the supervisor's longest restart backoff (60 s by default)
CHANNELS = ("web", "social")


@dataclass(frozen=True)
class ChaosOptions:
    seed: int = 1
    rounds: int = 3
    jobs: int = 12
    long: bool = False  # the long profile: longer outages, broker kills uncapped
    shared_stack: bool = False  # break the configured stack instead of a private one
    keep: bool = False  # keep the private stack's data (logs are always kept)
    finish_timeout_s: float | None = None  # for the jobs to end after the last round

    @property
    def timeout_s(self) -> float:
        if self.finish_timeout_s is not None:
            return self.finish_timeout_s
        return 900.0 if self.long else 240.0


@dataclass
class ChaosResult:
    options: ChaosOptions
    where: str
    elapsed_s: float
    faults: FaultLog
    tally: Tally
    checks: list[Check]
    logs: Path
    plan: tuple[Round, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)


def chaos_events(products: list[Any], base_url: str, jobs: int, run_id: str) -> list[dict[str, Any]]:
    """One catalogue event per job, each its own SKU (job ids derive from the SKU, and intake
    would rightly de-duplicate a repeat), channels alternating so both derivative sets appear."""
    events: list[dict[str, Any]] = []
    for i in range(jobs):
        product = products[i % len(products)]
        channel = CHANNELS[i % len(CHANNELS)]
        event = catalog_events([product], base_url, channels=(channel,), salt=f"{run_id}-{i}")[0]
        event["product"]["sku"] = f"{product.sku}-{run_id}-{i}"
        events.append(event)
    return events


def run_chaos(base: Settings, options: ChaosOptions, progress: Callable[[str], None] = print) -> ChaosResult:
    profile = LONG if options.long else CI
    sink = next(spec.name for spec in STAGES if spec.singleton)
    replicated = [spec.name for spec in STAGES if not spec.singleton]
    plan = make_plan(options.seed, options.rounds, options.jobs, replicated, sink, REPLICAS, profile)
    run_id = f"chaos{options.seed}-{time.strftime('%H%M%S')}"
    logs = base.log_dir / "chaos" / run_id
    stack = ChaosStack(base, options.shared_stack, progress)
    catalog_dir = Path(tempfile.mkdtemp(prefix="lightbox-chaos-catalog-"))
    server: StaticServer | None = None
    session: ReplicatedSession | None = None
    watcher: Watcher | None = None
    feed: EventFeed | None = None
    progress(f"chaos seed {options.seed}: {options.rounds} rounds, {options.jobs} jobs on {stack.where}")
    try:
        stack.up()
        products = make_sample_products(catalog_dir)
        server = StaticServer(catalog_dir)
        events = chaos_events(products, server.url, options.jobs, run_id)
        job_ids = expected_job_ids(events)
        sku_of = {job: str(event["product"]["sku"]) for event in events for job in expected_job_ids([event])}
        session = ReplicatedSession(
            stack.settings,
            prefix=f"{run_id}.",
            env=stage_env(stack.settings),
            copies=REPLICAS,
            progress=progress,
        )
        session.start()
        assert session.supervisor is not None
        watcher = Watcher(session.supervisor)
        watcher.start()
        feed = EventFeed(session.settings)
        injector = Injector(stack, watcher, progress)
        started = time.monotonic()
        submitted = 0
        for round_ in plan:
            batch = events[submitted : submitted + round_.jobs]
            submitted += len(batch)
            session.submit(batch)
            progress(f"round {round_.index + 1}/{len(plan)}: {len(batch)} job(s) submitted")
            for action in round_.actions:
                _follow(feed, action.after_s)
                injector.apply(action)
        stack.recover()
        progress(f"faults done after {time.monotonic() - started:.0f} s; waiting for the jobs to end")
        if not _wait_for_ends(feed, job_ids, options.timeout_s):
            progress(f"  not every job ended within {options.timeout_s:.0f} s")
        # Redelivered batches may still be in flight after every job looks done: a second
        # published record would come from one. Let every group catch up first.
        _settle(session.settings, feed)
        # A replica killed again and again waits out the supervisor's restart backoff; give it
        # that time before calling it down.
        wait_until(lambda: _all_running(watcher), RESTART_GRACE_S)
        supervision = watcher.snapshot()
        evidence = collect(session.settings, job_ids, sku_of, feed.events, supervision)
        checks = run_checks(evidence)
        return ChaosResult(
            options,
            stack.where,
            time.monotonic() - started,
            injector.log,
            tally(evidence),
            checks,
            logs,
            plan,
        )
    finally:
        if watcher is not None:
            watcher.stop()
        if feed is not None:
            feed.close()
        if session is not None:
            session.stop()
            if session.log_dir.exists():
                shutil.copytree(session.log_dir, logs, dirs_exist_ok=True)
        if server is not None:
            server.close()
        stack.close(keep=options.keep)
        shutil.rmtree(catalog_dir, ignore_errors=True)


def _follow(feed: EventFeed, seconds: float) -> int:
    """Read events for `seconds` (the pipeline runs meanwhile): the watcher thread supervises."""
    deadline = time.monotonic() + seconds
    read = feed.poll(max_s=max(0.0, seconds))
    remaining = deadline - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)
    return read


def _all_running(watcher: Watcher) -> bool:
    return all(c.process is not None and c.process.poll() is None for c in watcher.supervisor.children)


def _wait_for_ends(feed: EventFeed, job_ids: list[str], timeout_s: float) -> bool:
    def ended() -> bool:
        feed.poll(0.5)
        return all(is_terminal(feed.state_of(job)) for job in job_ids)

    return wait_until(ended, timeout_s)


def _settle(settings: Settings, feed: EventFeed, timeout_s: float = 90.0) -> bool:
    """Until every stage's group has committed everything on its inputs, twice in a row."""
    calm = 0

    def caught_up() -> bool:
        nonlocal calm
        feed.poll(0.5)
        try:
            lagging = [lag for lag in stage_lags(settings) if lag.lag > 0]
        except Exception:  # the broker is still recovering: not calm yet
            lagging = [None]
        calm = calm + 1 if not lagging else 0
        return calm >= 2

    return wait_until(caught_up, timeout_s, interval_s=1.0)


def format_result(result: ChaosResult) -> str:
    t, f, o = result.tally, result.faults, result.options
    lines = [
        f"chaos seed {o.seed} on {result.where}: {len(result.plan)} rounds in {result.elapsed_s:.0f} s",
        "",
        f"{'rounds':>6}  {'kills':>5}  {'outages':>7}  {'jobs':>5}  {'lost':>4}  {'duplicated':>10}  "
        f"{'dead-lettered':>13}",
        f"{len(result.plan):>6}  {f.kills:>5}  {f.outages:>7}  {t.jobs:>5}  {t.lost:>4}  {t.duplicated:>10}  "
        f"{t.dead_lettered:>13}",
        "",
        "faults: " + ", ".join(f"{fault} {n}" for fault, n in sorted(f.applied.items())),
        f"planned but skipped: {len(f.skipped)}; dead letters for outages: {t.outage_letters}",
    ]
    if f.recoveries_s:
        lines.append(
            f"broker/storage back after: max {max(f.recoveries_s):.1f} s, "
            f"mean {sum(f.recoveries_s) / len(f.recoveries_s):.1f} s"
        )
    lines.append("checks: " + ", ".join(f"{c.name} {'ok' if c.ok else 'FAILED'}" for c in result.checks))
    for check in result.checks:
        for problem in check.problems[:20]:
            lines.append(f"  {check.name}: {problem}")
        if len(check.problems) > 20:
            lines.append(f"  {check.name}: ... {len(check.problems) - 20} more")
    lines.append(f"stage logs: {result.logs}")
    return "\n".join(lines)
