"""What a chaos run must prove, as checks over collected evidence (evidence.py gathers it).

Each check returns the problems it found, one line each, naming the job, stage or letter, so a
failure says what went wrong without opening a log first:

- terminal: every submitted job ends in exactly one terminal state (per the events on the topic);
- event_log: the event log (ClickHouse) holds every event the topic holds for those jobs and
  shows the same state, so the sink lost nothing through its kills;
- published_once: a published job has exactly one record on assets.published (records counted on
  the topic: file names are deterministic and would hide a second publication), others none;
- assets: a published job's folder holds exactly the files its record names, nothing else;
- supervisor: the supervisor gave up on no stage, every process runs at the end, and no stage
  exited but by the plan's SIGKILLs;
- dead_letters: nothing is in the dead-letter topic for an outage (a letter whose dlq.error.kind
  is `dependency`: a broker or storage that was down). The jobs of a chaos run are all valid, so
  a letter the runtime judged the record's own fault (dlq.fault `record`) or could not place
  (`unknown`) is a lost job too, and reported with that cause.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from gateway.harness.chaos.supervision import SupervisionReport
from gateway.harness.chaos.topics import JobEvent, in_order, state_of
from processors.job_states import JobState, is_terminal
from processors.topology import STAGE_NAMES

ENDS = frozenset({JobState.PUBLISHED, JobState.FAILED, JobState.REJECTED})

# dlq.fault: whose fault the runtime judged it (processors/runtime/dlq.py).
FAULT_RECORD = "record"
FAULT_UNKNOWN = "unknown"
# dlq.error.kind: how errors.classify() named the error itself.
KIND_DEPENDENCY = "dependency"


@dataclass(frozen=True)
class Letter:
    """One message on the dead-letter topic, from its dlq.* headers."""

    key: str
    stage: str
    error_class: str
    error_message: str
    source: str  # original topic/partition/offset
    fault: str = ""  # dlq.fault: record | unknown
    error_kind: str = ""  # dlq.error.kind: dependency | record | unknown


def is_outage(letter: Letter) -> bool:
    """Whether a letter was written for an outage: its error is one classify() names a dependency
    failure (the runtime dead-letters one only when it kept failing while the rest of its batch
    succeeded, so its fault says record, yet what failed was a dependency)."""
    return letter.error_kind == KIND_DEPENDENCY


def cause(letter: Letter) -> str:
    """What a letter was written for, from its dlq.fault and dlq.error.kind headers (never from
    the error's class name, which says nothing reliable about whose fault it was)."""
    if is_outage(letter):
        return "an outage"
    if letter.fault == FAULT_RECORD:
        return "the record's own fault"
    if letter.fault == FAULT_UNKNOWN:
        return "an error that could not be placed and kept failing"
    return f"an unjudged failure (dlq.fault={letter.fault or 'missing'})"


@dataclass
class Evidence:
    job_ids: list[str]
    events: dict[str, list[JobEvent]]  # pipeline.events as on the topic, by job
    event_log_states: dict[str, str]  # the event log's current state, by job
    event_log_ids: set[str]  # event ids the event log holds for these jobs
    published_records: Counter[str]  # records on assets.published, by job
    published_keys: dict[str, set[str]]  # the files the published records name, by job
    asset_files: dict[str, set[str]]  # the files under each job's published folder
    letters: list[Letter]
    supervision: SupervisionReport


@dataclass
class Check:
    name: str
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_terminal(evidence: Evidence) -> Check:
    check = Check("terminal")
    for job in evidence.job_ids:
        events = evidence.events.get(job, [])
        state = state_of(events)
        ends = sorted({e.state for e in events if e.state in ENDS})
        if not is_terminal(state):
            check.problems.append(f"{job}: not finished, last state {state!r} ({_trail(events)})")
        elif len(ends) > 1:
            check.problems.append(f"{job}: more than one end: {', '.join(ends)} ({_trail(events)})")
    return check


def check_event_log(evidence: Evidence) -> Check:
    check = Check("event_log")
    for job in evidence.job_ids:
        events = evidence.events.get(job, [])
        missing = {e.event_id for e in events} - evidence.event_log_ids
        if missing:
            lost = sorted({f"{e.stage}:{e.state}" for e in events if e.event_id in missing})
            check.problems.append(f"{job}: {len(missing)} event(s) on the topic not in the event log: {lost}")
        topic_state, log_state = state_of(events), evidence.event_log_states.get(job, "unknown")
        if topic_state != log_state:
            check.problems.append(f"{job}: the event log says {log_state!r}, the topic {topic_state!r}")
    return check


def check_published_once(evidence: Evidence) -> Check:
    check = Check("published_once")
    for job in evidence.job_ids:
        count = evidence.published_records.get(job, 0)
        published = state_of(evidence.events.get(job, [])) == JobState.PUBLISHED
        if published and count != 1:
            # The sources of its `published` events tell a replayed publish batch (one input
            # offset, published twice) from an input that arrived twice (two offsets); the first
            # stage that saw the job at two offsets is where the second copy came from.
            sources = sorted(
                {e.source for e in evidence.events.get(job, []) if e.state == JobState.PUBLISHED}
            )
            check.problems.append(
                f"{job}: {count} records on assets.published (expected exactly 1); "
                f"published from {', '.join(sources) or '?'}; {first_copy(evidence.events.get(job, []))}"
            )
        elif not published and count:
            check.problems.append(f"{job}: not published, yet {count} record(s) on assets.published")
    return check


def check_assets(evidence: Evidence) -> Check:
    check = Check("assets")
    for job in evidence.job_ids:
        files = evidence.asset_files.get(job, set())
        named = evidence.published_keys.get(job, set())
        if evidence.published_records.get(job, 0) == 0:
            if files:
                check.problems.append(f"{job}: {len(files)} published file(s) without a published record")
            continue
        if files != named:
            extra, absent = sorted(files - named), sorted(named - files)
            check.problems.append(
                f"{job}: published files differ from its record: extra {extra}, missing {absent}"
            )
    return check


def check_supervisor(evidence: Evidence) -> Check:
    check = Check("supervisor")
    report = evidence.supervision
    for message in report.gave_up:
        check.problems.append(f"the supervisor gave up: {message.splitlines()[0]}")
    for name in report.not_running:
        check.problems.append(f"{name} is not running at the end")
    for exit in report.unplanned:
        check.problems.append(
            f"{exit.stage}#{exit.replica} (pid {exit.pid}) exited on its own with {exit.code}: "
            f"{last_error(exit.log_tail)}"
        )
    seen = Counter(f"{e.stage}#{e.replica}" for e in report.unplanned)
    for name, extra in report.unexplained_restarts.items():
        if extra > seen[name]:
            check.problems.append(f"{name}: {extra - seen[name]} restart(s) not caused by the plan")
    return check


def check_dead_letters(evidence: Evidence) -> Check:
    check = Check("dead_letters")
    for letter in evidence.letters:
        # Every job of a chaos run is valid: a letter of any cause is a lost job.
        check.problems.append(
            f"{letter.source} ({letter.key}) dead-lettered by {letter.stage} for {cause(letter)} "
            f"(fault={letter.fault or '?'}, kind={letter.error_kind or '?'}): "
            f"{letter.error_class}: {letter.error_message[:200]}"
        )
    return check


CHECKS = (
    check_terminal,
    check_event_log,
    check_published_once,
    check_assets,
    check_supervisor,
    check_dead_letters,
)


def run_checks(evidence: Evidence) -> list[Check]:
    return [check(evidence) for check in CHECKS]


@dataclass(frozen=True)
class Tally:
    """The run's figures for the table."""

    jobs: int
    lost: int  # not in a terminal state at the end
    duplicated: int  # more than one published record, or files beyond the record's
    dead_lettered: int
    outage_letters: int


def tally(evidence: Evidence) -> Tally:
    lost = sum(1 for job in evidence.job_ids if not is_terminal(state_of(evidence.events.get(job, []))))
    duplicated = sum(
        1
        for job in evidence.job_ids
        if evidence.published_records.get(job, 0) > 1
        or evidence.asset_files.get(job, set()) - evidence.published_keys.get(job, set())
    )
    outages = sum(1 for letter in evidence.letters if is_outage(letter))
    return Tally(len(evidence.job_ids), lost, duplicated, len(evidence.letters), outages)


def first_copy(events: list[JobEvent]) -> str:
    """Where a job was first handled twice from two different input offsets, in flow order."""
    by_stage: dict[str, set[str]] = {}
    for event in events:
        if event.source:
            by_stage.setdefault(event.stage, set()).add(event.source)
    for stage in STAGE_NAMES:
        if len(by_stage.get(stage, ())) > 1:
            return f"first seen twice by {stage} ({', '.join(sorted(by_stage[stage]))})"
    return "no stage saw it at two offsets"


_ERROR_LINE = re.compile(r"^[\w.]*(Error|Exception|Exit|Interrupt)\b.*")


def last_error(log_tail: str) -> str:
    """The exception a crashed process printed last (not librdkafka's chatter), else its last line."""
    lines = [line for line in log_tail.strip().splitlines() if line and not line.startswith("%")]
    errors = [line for line in lines if _ERROR_LINE.match(line)]
    return (errors or lines or ["(empty log)"])[-1][:300]


def _trail(events: list[JobEvent]) -> str:
    trail = [f"{e.stage}:{e.state}{'/' + e.reason if e.reason else ''}" for e in in_order(events)[-6:]]
    return " → ".join(trail) or "no events"
