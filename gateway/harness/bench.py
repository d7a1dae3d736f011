"""`lightbox bench pipeline`: N jobs through every stage with the CPU compositor, beside a baseline.

Prints, from one run:
- the baseline (gateway/harness/baseline.py): the same kind of jobs (same products, request and
  count; their own SKUs, so nothing is de-duplicated against the pipeline's), through the
  stages' own handlers one job at a time in one process, same storage, no Kafka; run before the
  pipeline and again after it, and the two runs pooled are the ratio's reference (the machine's
  speed drifts by tens of percent over minutes: a 23% gap between the two runs was measured);
- the pipeline: jobs/s (from the first submit to the last job's publish event; in sequential
  mode each job but the last is still waited for by polling its state, so that mode's jobs/s
  includes the event-log sink's linger and the polling) and that as a ratio to the baseline,
  p50/p95 end-to-end latency, and the share of latency outside handlers: 1 - (sum of handler
  time on the job's path) / (accepted → published);
- per stage: processes, CPU-seconds per job (each process's own, from the kernel's accounting of
  it, between the first submit and the last job's end), the share of the wall time its processes
  were busy on a CPU, handler ms per job (from its events; this includes waiting for a thread
  or the GIL, which the CPU figure does not), and the baseline's CPU-seconds per job; and which
  stage is the bottleneck;
- the stack's own services (Kafka, MinIO, the registry, as `lightbox stack up` started them):
  their CPU-seconds per job during the baseline and during the pipeline, which share the cores
  with the stages but are not in their figures;
- the machine's load averages before each part (the bench shares the machine).

Both sides are warmed first with `warmup` jobs of their own (untimed, uncounted, from URLs of
their own): the stage processes are started fresh for each run and the baseline's handlers too,
while a deployment's are long-running. The burst asks for its jobs' states every BURST_POLL_S,
and every BURST_LAST_POLL_S once nine in ten are done; its jobs/s ends at the last publish event.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.local.service import StackError
from deploy.local.session import PipelineSession, StaticServer, expected_job_ids
from deploy.local.stack import LocalStack
from deploy.local.supervisor import Copies, Supervisor, copies_of, process_cpu_seconds
from gateway.harness.baseline import BASELINE_STAGES, BaselineResult, run_baseline
from gateway.harness.sample_catalog import SampleProduct, catalog_events, make_sample_products
from processors.config import Settings
from processors.eventlog.reader import EventLogReader
from processors.job_states import JobState, is_terminal

LOCALES = ("en-US", "en-GB", "de-DE", "fr-FR", "es-ES", "it-IT", "nl-NL", "sv-SE")
# Jobs a run takes by default. A burst fills the pipeline (each stage's first batch in turn) for
# 1.3-2.6 s and drains it at the end; in a run of 40 jobs (about 4 s) that was a third of the
# wall time, so its jobs/s said more about latency than about what the stages carry. 144 jobs
# (18 products, about 13 s) measure the sustained rate; the fill is printed either way.
DEFAULT_JOBS = 144
# A stage whose processes were busy at least this share of the wall time was saturated.
SATURATED = 0.85
# How often a burst asks the event log for its jobs' states. Each ask costs the sink about 12 ms
# of CPU (144 job ids, measured) and the bench its own: CPU the pipeline it measures would have
# had. The run's end is the last publish event's time, not when a poll noticed it, so polling
# less often only makes the bench notice the end later. Sequential mode polls every 0.5 s: there
# each job waits for the poll that sees it done.
BURST_POLL_S = 2.0
SEQUENTIAL_POLL_S = 0.5
# Once nine in ten of a burst's jobs are done, asks come this often: the stages' CPU and busy
# shares are read when the bench sees the end, so it should see it soon after the last publish.
BURST_LAST_POLL_S = 0.25


def _single_job_events(events: list[dict]) -> list[dict]:
    """The same jobs, one event per job (one locale each), so they can go one at a time."""
    single = []
    for event in events:
        for n, locale in enumerate(event["request"]["locales"]):
            copy = {
                **event,
                "event_id": f"{event['event_id']}-{n}",
                "request": {**event["request"], "locales": [locale]},
            }
            single.append(copy)
    return single


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def load_line() -> str:
    """The machine's load averages (1, 5, 15 minutes) and core count, as `uptime` shows them."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} cores"


def _events(samples: list[SampleProduct], base_url: str, jobs: int, salt: str) -> list[dict[str, Any]]:
    """Catalog events for ``jobs`` jobs (rounded up to whole products, one job per locale), each
    product under a SKU of its own so every job is new work, not a de-duplicated repeat."""
    count = -(-jobs // len(LOCALES))
    events: list[dict[str, Any]] = []
    for i in range(count):
        product = samples[i % len(samples)]
        events += catalog_events([product], base_url, locales=LOCALES, salt=f"{salt}-{i}")
        events[-1]["product"]["sku"] = f"{product.sku}-{salt}-{i}"
    return events


def _autogroup() -> bool:
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return False


@dataclass(frozen=True)
class StageLoad:
    stage: str
    copies: int
    cpu_s: float  # all its processes together, over the run
    restarts: int


def _stage_loads(
    supervisor: Supervisor, before: dict[str, float], restarts_before: dict[str, int]
) -> list[StageLoad]:
    after = supervisor.cpu_seconds()
    cpu: dict[str, float] = defaultdict(float)
    restarts: dict[str, int] = defaultdict(int)
    for child in supervisor.children:
        if child.name in after:
            # A process restarted during the run counts from its new start.
            started = before.get(child.name, 0.0) if child.restarts == restarts_before[child.name] else 0.0
            cpu[child.stage] += after[child.name] - started
        restarts[child.stage] += child.restarts - restarts_before[child.name]
    stages = list(dict.fromkeys(child.stage for child in supervisor.children))
    return [
        StageLoad(stage, copies_of(stage, supervisor.copies), cpu[stage], restarts[stage]) for stage in stages
    ]


def _service_cpu(settings: Settings) -> dict[str, float]:
    """CPU-seconds each of the stack's services has used so far, for those this home's
    `lightbox stack up` started (a broker of someone else's has no pid file here)."""
    readings: dict[str, float] = {}
    for service in LocalStack(settings, progress=lambda _: None).services:
        pid = service.pid()
        seconds = process_cpu_seconds(pid) if pid is not None else None
        if seconds is not None:
            readings[service.name] = seconds
    return readings


def _cpu_since(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before[name] for name in after if name in before}


def _services_line(part: str, used: dict[str, float], jobs: int) -> str:
    if not used:
        return f"stack services during the {part}: not started by this home's stack (not measured)"
    each = ", ".join(f"{name} {seconds / max(1, jobs):.3f}" for name, seconds in used.items())
    total = sum(used.values()) / max(1, jobs)
    return f"stack services during the {part}: {total:.3f} CPU s/job ({each})"


async def _published_span(settings: Settings, job_ids: list[str]) -> tuple[float, float] | None:
    """When the first and the last of these jobs were published (epoch seconds, the publish
    stage's own clock): the run's end as the pipeline saw it, not as the bench's polling of job
    states (every poll_s, behind the event-log sink's linger) noticed it."""
    ids = ", ".join(f"'{j}'" for j in job_ids)
    result = await EventLogReader(settings).sql(
        "SELECT toUnixTimestamp64Milli(min(at)), toUnixTimestamp64Milli(max(at)) "
        f"FROM {settings.clickhouse.database}.pipeline_events "
        f"WHERE job_id IN ({ids}) AND state = '{JobState.PUBLISHED}'"
    )
    rows = result.get("rows", [])
    if not rows or not rows[0][1]:
        return None
    return float(rows[0][0]) / 1000, float(rows[0][1]) / 1000


async def _handler_ms_by_stage(settings: Settings, job_ids: list[str]) -> dict[str, float]:
    """Sum of handler time per stage over these jobs, from their pipeline events."""
    ids = ", ".join(f"'{j}'" for j in job_ids)
    result = await EventLogReader(settings).sql(
        f"SELECT stage, sum(duration_ms) FROM {settings.clickhouse.database}.pipeline_events "
        f"WHERE job_id IN ({ids}) GROUP BY stage"
    )
    return {str(stage): float(total) for stage, total in result.get("rows", [])}


def _baseline_settings(settings: Settings, run_id: str) -> Settings:
    return settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(update={"topic_prefix": f"bench-{run_id}-baseline."}),
            "references": settings.references.model_copy(
                update={"allow_hosts": [*settings.references.allow_hosts, "127.0.0.1"]}
            ),
        }
    )


def _run_baseline(
    settings: Settings, run_id: str, catalog_dir: Path, jobs: int, warmup: int
) -> tuple[BaselineResult, dict[str, float]]:
    """The baseline's result, and the CPU the stack's services used meanwhile."""
    directory = catalog_dir / f"baseline-{run_id}"
    samples = make_sample_products(directory)
    # A server of its own: other URLs, so no run finds another's downloads cached. The warm-up
    # has one more, so the timed jobs find none of its downloads in the URL cache either.
    server, warm_server = StaticServer(directory), StaticServer(directory)
    try:
        events = _events(samples, server.url, jobs, f"{run_id}-baseline")
        warm = _events(samples, warm_server.url, warmup, f"{run_id}-baseline-warmup") if warmup else []
        services_before: dict[str, float] = {}
        result = asyncio.run(
            run_baseline(
                _baseline_settings(settings, run_id),
                events,
                warm,
                on_measure=lambda: services_before.update(_service_cpu(settings)),
            )
        )
        return result, _cpu_since(services_before, _service_cpu(settings))
    finally:
        server.close()
        warm_server.close()


def _print_baseline(label: str, result: BaselineResult, services: dict[str, float]) -> None:
    if result.warmup_jobs:
        print(
            f"  warm-up first: {result.warmup_published} of {result.warmup_jobs} jobs published "
            "(not measured)"
        )
    cpu = sum(result.cpu_s.values())
    print(
        f"{label}: {result.jobs} jobs, "
        f"{result.published} published in {result.elapsed_s:.1f} s: {result.jobs_per_s:.2f} jobs/s; "
        f"CPU {cpu / max(1, result.jobs):.3f} s/job"
    )
    print("  " + _services_line("baseline", services, result.jobs))
    stopped = sorted({where for where in result.outcomes.values() if where != "published"})
    for where in stopped[:5]:
        print(f"  baseline job {where}")


def run_pipeline_bench(
    settings: Settings,
    jobs: int | None = None,
    timeout_s: float = 600,
    mode: str = "burst",
    copies: Copies | None = None,
    baseline: bool = True,
    keep_topics: bool = False,
    poll_s: float | None = None,
    warmup: int = 16,
) -> int:
    """burst: every job submitted at once (throughput; latency includes queueing).
    sequential: one job in flight at a time (latency is the pipeline's own, without queueing).
    copies: processes per stage (None: supervisor.copies).
    baseline: the single-process loop runs before the pipeline and again after it (the stages
    stopped), and the ratio is to both runs pooled: this machine's speed drifts by tens of
    percent over minutes, and a baseline on one side only would carry that drift into the ratio.
    keep_topics: leave the run's topics on the broker (by default they are deleted at the end).
    poll_s: seconds between asks for the jobs' states (None: BURST_POLL_S or SEQUENTIAL_POLL_S).
    warmup: jobs through the pipeline, and through each baseline run, before the timed ones
    (untimed, uncounted): a long-running deployment's processes are warm when a burst comes."""
    if poll_s is None:
        poll_s = BURST_POLL_S if mode == "burst" else SEQUENTIAL_POLL_S
    if jobs is None:
        jobs = DEFAULT_JOBS
    run_id = time.strftime("%Y%m%d-%H%M%S")
    catalog_dir = settings.home / "bench" / run_id
    catalog_dir.mkdir(parents=True, exist_ok=True)
    copies = dict(settings.supervisor.copies) if copies is None else copies

    bases: list[tuple[BaselineResult, dict[str, float]]] = []
    if baseline:
        print("baseline: one process, the stages' handlers in order, no Kafka; run before and after")
        print(f"before the baseline: {load_line()}", flush=True)
        bases.append(_run_baseline(settings, f"{run_id}-1", catalog_dir, jobs, warmup))
        _print_baseline("baseline, before the pipeline", *bases[-1])

    samples = make_sample_products(catalog_dir)
    server = StaticServer(catalog_dir)
    session = PipelineSession(settings, prefix=f"bench-{run_id}.", copies=copies)
    try:
        session.start()
        assert session.supervisor is not None
        supervisor = session.supervisor
        if warmup:
            _warm_up(session, samples, catalog_dir, warmup, f"{run_id}-warmup", timeout_s)
        events = _events(samples, server.url, jobs, run_id)
        job_ids = expected_job_ids(events)
        print(f"before the pipeline: {load_line()}", flush=True)
        cpu_before = supervisor.cpu_seconds()
        services_before = _service_cpu(settings)
        restarts_before = {child.name: child.restarts for child in supervisor.children}
        started, started_wall = time.monotonic(), time.time()
        if mode == "sequential":
            states = {}
            for event in _single_job_events(events):
                session.submit([event])
                states.update(session.wait_for(expected_job_ids([event]), timeout_s, poll_s=poll_s))
        else:
            session.submit(events)
            states = session.wait_for(job_ids, timeout_s, poll_s=poll_s, last_poll_s=BURST_LAST_POLL_S)
        seen = time.monotonic() - started
        loads = _stage_loads(supervisor, cpu_before, restarts_before)
        services = _cpu_since(services_before, _service_cpu(settings))
        print(f"after the pipeline: {load_line()}")
        published = [j for j in job_ids if states.get(j) == JobState.PUBLISHED]
        latencies = asyncio.run(EventLogReader(session.settings).latencies(published))
        e2e = [v["end_to_end_ms"] for v in latencies.values() if v["end_to_end_ms"] > 0]
        handler = [v["handler_ms"] for v in latencies.values() if v["end_to_end_ms"] > 0]
        if not e2e:
            print("no job was published; see the stage logs in", session.log_dir)
            return 1
        by_stage = asyncio.run(_handler_ms_by_stage(session.settings, published))
        span = asyncio.run(_published_span(session.settings, published))
    finally:
        session.stop()
        server.close()
        if not keep_topics:
            _delete_topics(session)

    if span is not None and span[1] > started_wall:
        first, last = span
        elapsed = min(seen, last - started_wall)
        timing = (
            f"the last job was published {elapsed:.1f} s after the first submit "
            f"(the bench's polling saw it at {seen:.1f} s)"
        )
        if mode == "burst":
            # A short burst spends a good part of its run filling the pipeline: say how much.
            timing += (
                f"\nthe first job was published {first - started_wall:.1f} s after the first submit "
                "(filling the pipeline: every stage's first batch in turn; the baseline never waits so)"
            )
    else:
        elapsed = seen
        timing = f"no publish time in the event log: timed by the bench's polling, {seen:.1f} s"
    base: BaselineResult | None = None
    base_services: dict[str, float] = {}
    if baseline:
        print(f"before the second baseline: {load_line()}", flush=True)
        bases.append(_run_baseline(settings, f"{run_id}-2", catalog_dir, jobs, warmup))
        _print_baseline("baseline, after the pipeline", *bases[-1])
        base, base_services = _pooled(bases)
        _print_baseline("baseline, both runs pooled (the ratio's reference)", base, base_services)
    print(timing)
    _report(mode, job_ids, published, elapsed, seen, e2e, handler, loads, by_stage, base)
    print(_services_line("pipeline", services, len(published)))
    if base is not None and mode == "burst" and services and base_services:
        _print_whole_machine(loads, services, len(published), base, base_services)
    return 0


def _warm_up(
    session: PipelineSession,
    samples: list[SampleProduct],
    catalog_dir: Path,
    jobs: int,
    salt: str,
    timeout_s: float,
) -> None:
    """Jobs through the pipeline before the measured ones, untimed: the fresh stage processes'
    caches and connections and the broker's (Kafka's CPU per job fell over the first runs on a
    broker just started, 0.044 → 0.024 → 0.014). Served from a server of their own, so the
    measured jobs find none of these downloads in the references' URL cache."""
    server = StaticServer(catalog_dir)
    try:
        events = _events(samples, server.url, jobs, salt)
        ids = expected_job_ids(events)
        began = time.monotonic()
        session.submit(events)
        states = session.wait_for(ids, timeout_s)
    finally:
        server.close()
    done = sum(1 for j in ids if states.get(j) == JobState.PUBLISHED)
    ended = sum(1 for j in ids if is_terminal(states.get(j)))
    print(f"warm-up: {done} of {len(ids)} jobs published in {time.monotonic() - began:.1f} s (not measured)")
    if ended < len(ids):
        print(f"warning: {len(ids) - ended} warm-up jobs still in flight; they run beside the measured ones")
    elif done < len(ids):
        print(
            f"warning: {len(ids) - done} warm-up jobs did not publish; see the stage logs in "
            f"{session.log_dir}"
        )


def _delete_topics(session: PipelineSession) -> None:
    try:
        deleted = session.delete_topics()
    except StackError as exc:
        print(f"could not delete the run's topics: {exc}")
        return
    print(f"deleted the run's {len(deleted)} topics (--keep-topics keeps them)")


def _pooled(
    runs: list[tuple[BaselineResult, dict[str, float]]],
) -> tuple[BaselineResult, dict[str, float]]:
    """Several baseline runs as one: their jobs, time and CPU added up."""
    pooled = BaselineResult(jobs=0, published=0, elapsed_s=0.0)
    services: dict[str, float] = defaultdict(float)
    for result, used in runs:
        pooled.jobs += result.jobs
        pooled.published += result.published
        pooled.elapsed_s += result.elapsed_s
        for stage, seconds in result.cpu_s.items():
            pooled.cpu_s[stage] = pooled.cpu_s.get(stage, 0.0) + seconds
        for stage, seconds in result.wall_s.items():
            pooled.wall_s[stage] = pooled.wall_s.get(stage, 0.0) + seconds
        pooled.outcomes.update(result.outcomes)
        for name, seconds in used.items():
            services[name] += seconds
    # A service measured in one run only (its pid file appeared later) is not comparable.
    common = set.intersection(*(set(used) for _, used in runs)) if runs else set()
    return pooled, {name: seconds for name, seconds in services.items() if name in common}


def _report(
    mode: str,
    job_ids: list[str],
    published: list[str],
    elapsed: float,
    window: float,
    e2e: list[float],
    handler: list[float],
    loads: list[StageLoad],
    handler_by_stage: dict[str, float],
    base: BaselineResult | None,
) -> None:
    done = max(1, len(published))
    rate = len(published) / elapsed
    overhead = 1 - sum(handler) / sum(e2e)
    print(f"mode: {mode}")
    print(f"jobs: {len(job_ids)} submitted, {len(published)} published in {elapsed:.1f} s")
    ratio = f" = {rate / base.jobs_per_s:.2f}x the baseline ({base.jobs_per_s:.2f} jobs/s)" if base else ""
    print(f"throughput: {rate:.2f} jobs/s{ratio}")
    print(
        f"end-to-end latency: p50 {_percentile(e2e, 0.5):.0f} ms, p95 {_percentile(e2e, 0.95):.0f} ms, "
        f"mean {statistics.mean(e2e):.0f} ms"
    )
    print(
        f"handler time per job: mean {statistics.mean(handler):.0f} ms; "
        f"share of latency outside handlers (pipeline overhead): {overhead:.1%}"
    )
    print(
        f"{'stage':<12} {'copies':>6} {'CPU s/job':>10} {'busy':>6} {'handler ms/job':>15} "
        f"{'baseline CPU s/job':>19}"
    )
    for load in loads:
        busy = load.cpu_s / (window * load.copies)
        base_cpu = (
            f"{base.cpu_s[load.stage] / max(1, base.jobs):.3f}"
            if base and load.stage in BASELINE_STAGES
            else "-"
        )
        restarts = f"  ({load.restarts} restarts)" if load.restarts else ""
        print(
            f"{load.stage:<12} {load.copies:>6} {load.cpu_s / done:>10.3f} {busy:>6.0%} "
            f"{handler_by_stage.get(load.stage, 0.0) / done:>15.0f} {base_cpu:>19}{restarts}"
        )
    total = sum(load.cpu_s for load in loads)
    cores = os.cpu_count() or 1
    print(
        f"all stages: {total / done:.3f} CPU s/job, {total / window / cores:.0%} of {cores} cores; "
        f"at this CPU per job {cores} idle cores would carry {cores * done / total:.1f} jobs/s"
    )
    # Burst only: one job at a time leaves the stages idle most of the run, and their idle polling
    # (and the event-log sink answering the bench's own state queries) is then most of their CPU.
    if base is not None and mode == "burst":
        base_cpu = sum(base.cpu_s.values()) / max(1, base.jobs)
        pipe_cpu = total / done
        # Derived from CPU alone, so the machine's other load drops out: what the ratio would be
        # with the cores to ourselves and the stages' work overlapping perfectly.
        print(
            f"CPU per job: pipeline {pipe_cpu:.3f} s, baseline {base_cpu:.3f} s "
            f"({pipe_cpu / base_cpu:.2f}x); "
            f"on {cores} idle cores the pipeline could carry {cores / pipe_cpu:.1f} jobs/s, "
            f"{cores * base_cpu / pipe_cpu:.2f}x the baseline's one core ({1 / base_cpu:.1f} jobs/s) "
            "(derived, not measured)"
        )
    if _autogroup() and os.getloadavg()[0] > cores:
        print(
            "note: the kernel's autogroup scheduling is on and the machine is loaded: the processes "
            "of this session (every stage, and the baseline's loop) share one session's fair share "
            "of the CPU beside the other sessions', so the stages side by side get far less than "
            f"{cores} cores"
        )
    worst = max(loads, key=lambda load: load.cpu_s / load.copies)
    busy = worst.cpu_s / (window * worst.copies)
    verdict = "saturated" if busy >= SATURATED else "the busiest"
    print(
        f"bottleneck: {worst.stage} ({verdict}: its {worst.copies} process(es) busy {busy:.0%} of the "
        f"wall time, {worst.cpu_s / done:.3f} CPU s/job)"
        + ("; the cores are the limit" if total / window / cores >= SATURATED else "")
    )


def _print_whole_machine(
    loads: list[StageLoad],
    services: dict[str, float],
    published: int,
    base: BaselineResult,
    base_services: dict[str, float],
) -> None:
    """CPU per job with the services counted on both sides: what the cores actually carried."""
    cores = os.cpu_count() or 1
    pipe = (sum(load.cpu_s for load in loads) + sum(services.values())) / max(1, published)
    alone = (sum(base.cpu_s.values()) + sum(base_services.values())) / max(1, base.jobs)
    print(
        f"with the services: pipeline {pipe:.3f} CPU s/job, baseline {alone:.3f}; "
        f"{cores} idle cores would carry {cores / pipe:.1f} jobs/s (derived, not measured)"
    )
