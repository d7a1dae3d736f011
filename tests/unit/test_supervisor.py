"""`run all`'s supervisor, with real child processes: a stage that keeps crashing after it started
is restarted with capped exponential backoff and reported, the healthy ones keep running (same
pid), and only a stage that never starts (configuration) stops everything, with its log tail."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from deploy.local.supervisor import StageCrashLoop, Supervisor, all_stages, state_file_of
from gateway.cli.main import main
from gateway.ops.processes import read_processes
from processors.config import SupervisorSettings
from processors.topology import STAGES

# Stand-ins for stage processes, chosen by the stage name they are started with. They log the
# runtime's start line (JSON, as processors/logs.py writes it) the way a real stage does.
STAND_IN = """
import json, pathlib, sys, time
stage, marker = sys.argv[1], pathlib.Path(sys.argv[2])
def log(msg, **kw):
    print(json.dumps({"level": "info", "msg": msg, **kw}), flush=True)
if stage == "healthy":
    log("stage started")
    time.sleep(600)
elif stage == "crashy":
    if not marker.exists():  # its first run starts, works a little, then dies
        log("stage started")
        marker.touch()
        time.sleep(0.3)
    log("batch failed", error="Traceback ...\\nKafkaException: MSG_SIZE_TOO_LARGE")
    sys.exit(3)
elif stage == "broken":
    print("configuration error: bad setting stage.batch_size", flush=True)
    sys.exit(2)
elif stage == "slow-crashy":  # up a while every time, then dies
    log("stage started")
    time.sleep(0.6)
    sys.exit(4)
"""

FAST = SupervisorSettings(
    restart_initial_s=0.1, restart_max_s=0.4, healthy_after_s=30.0, first_start_attempts=3
)


def _supervisor(tmp_path: Path, stages: list[str], settings: SupervisorSettings = FAST) -> Supervisor:
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    marker = tmp_path / "crashy-started-once"
    return Supervisor(
        stages,
        tmp_path / "logs",
        settings=settings,
        state_file=state_file_of(tmp_path),
        command=lambda stage: [sys.executable, str(script), stage, str(marker)],
    )


def _tend(supervisor: Supervisor, seconds: float) -> list[str]:
    notes: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        notes += supervisor.check()
        time.sleep(0.02)
    return notes


def test_a_crash_loop_after_a_start_backs_off_and_the_healthy_stage_keeps_running(tmp_path) -> None:
    supervisor = _supervisor(tmp_path, ["healthy", "crashy"])
    supervisor.start()
    healthy, crashy = supervisor.children
    try:
        notes = _tend(supervisor, 0.2)
        healthy_pid = healthy.pid
        assert healthy.state == "running"
        notes += _tend(supervisor, 3.0)  # never raises StageCrashLoop: crashy started once
        assert healthy.pid == healthy_pid and healthy.process.poll() is None
        assert crashy.restarts >= 4
        assert all(note.startswith("crashy ") for note in notes)
        delays = [float(d) for d in re.findall(r"restart #\d+ in ([\d.]+)s", "\n".join(notes))]
        assert delays[:4] == [0.1, 0.2, 0.4, 0.4], "initial, doubled, capped at restart_max_s"
        assert "exit code 3" in notes[-1] and "MSG_SIZE_TOO_LARGE" in notes[-1], "exit code and log tail"

        report = read_processes(tmp_path)
        assert report.supervisor_running
        rows = {row.name: row for row in report.processes}
        assert rows["healthy"].pid == healthy_pid and rows["healthy"].state == "running"
        assert rows["healthy"].restarts == 0
        assert rows["crashy"].restarts >= 4
        assert rows["crashy"].last_exit_code == 3
        assert rows["crashy"].last_error == "exit code 3: batch failed: KafkaException: MSG_SIZE_TOO_LARGE"
    finally:
        supervisor.stop()
    assert {row.state for row in read_processes(tmp_path).processes} == {"stopped"}


def test_a_stage_that_cannot_start_stops_everything_with_its_log(tmp_path) -> None:
    supervisor = _supervisor(tmp_path, ["healthy", "broken"])
    supervisor.start()
    try:
        with pytest.raises(StageCrashLoop) as caught:
            _tend(supervisor, 10)
    finally:
        supervisor.stop()
    message = str(caught.value)
    assert message.startswith("stage broken failed 3 times without ever starting (exit code 2)")
    assert "configuration error: bad setting stage.batch_size" in message
    assert {row.name: row.state for row in read_processes(tmp_path).processes}["broken"] == "failed"


def test_the_real_stage_command_fails_fast_on_a_configuration_error(tmp_path) -> None:
    # `lightbox run no-such-stage` exits 2 at once: a real child standing in for a bad config.
    supervisor = Supervisor(["no-such-stage"], tmp_path, env={"LIGHTBOX_HOME": str(tmp_path)}, settings=FAST)
    supervisor.start()
    try:
        with pytest.raises(StageCrashLoop, match=r"(?s)no-such-stage failed 3 times.*invalid choice"):
            _tend(supervisor, 60)
    finally:
        supervisor.stop()


def test_a_healthy_run_resets_the_backoff(tmp_path) -> None:
    settings = FAST.model_copy(update={"healthy_after_s": 0.4})
    supervisor = _supervisor(tmp_path, ["slow-crashy"], settings)
    supervisor.start()
    try:
        notes = _tend(supervisor, 2.5)
    finally:
        supervisor.stop()
    delays = [float(d) for d in re.findall(r"in ([\d.]+)s\.", "\n".join(notes))]
    assert len(delays) >= 2 and set(delays) == {0.1}, notes


def test_a_killed_stage_is_restarted_not_given_up_on(tmp_path) -> None:
    supervisor = _supervisor(tmp_path, ["healthy"])
    (child,) = supervisor.children
    for _ in range(FAST.first_start_attempts + 1):
        # Killed before it could log its start: someone else's doing, not a failure to start.
        child.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        child.started_at = time.monotonic()
        child.process.send_signal(signal.SIGKILL)
        child.process.wait()
        notes = supervisor.check()
        assert notes and "killed by SIGKILL" in notes[0]
        child.next_start_at = None  # look again without waiting out the backoff
    assert child.start_failures == 0
    supervisor.stop()


def test_ps_lists_processes_and_says_when_no_supervisor_runs(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("LIGHTBOX_HOME", str(tmp_path))
    assert main(["ps"]) == 1
    assert "no `lightbox run all` has run here" in capsys.readouterr().out

    supervisor = _supervisor(tmp_path, ["healthy"])
    supervisor.start()
    try:
        _tend(supervisor, 0.5)
        assert main(["ps"]) == 0
        out = capsys.readouterr().out
        assert re.search(rf"healthy\s+{supervisor.children[0].pid}\s+running\s+0", out), out
        assert main(["ps", "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert data["processes"][0]["state"] == "running"
    finally:
        supervisor.stop()
    # The state a supervisor that is gone left behind: shown, and said to be old.
    state = json.loads(state_file_of(tmp_path).read_text())
    state["supervisor_pid"] = 2**22 + 12345  # no such process
    state_file_of(tmp_path).write_text(json.dumps(state))
    assert main(["ps"]) == 1
    assert "is not running; its last state" in capsys.readouterr().out


def test_the_state_file_is_replaced_whole(tmp_path) -> None:
    supervisor = _supervisor(tmp_path, ["healthy"])
    supervisor.start()
    try:
        path = state_file_of(tmp_path)
        assert json.loads(path.read_text())["processes"][0]["name"] == "healthy"
        # Only the file itself is left: each write goes to a temporary beside it, then replaces it.
        assert [p.name for p in path.parent.iterdir()] == [path.name]
    finally:
        supervisor.stop()


def test_each_process_gets_its_own_metrics_port(tmp_path) -> None:
    supervisor = Supervisor(["intake", "generate"], tmp_path, copies=2, metrics_base_port=9400)
    assert [c.metrics_port for c in supervisor.children] == [9400, 9401, 9402, 9403]
    assert [c.stage for c in supervisor.children] == ["intake", "intake", "generate", "generate"]
    assert [c.name for c in supervisor.children] == ["intake-0", "intake-1", "generate-0", "generate-1"]
    assert Supervisor(["intake"], tmp_path).children[0].metrics_port == 0


def test_copies_never_start_a_second_singleton(tmp_path) -> None:
    # `run all --copies 3`: three of every stage, but one event-log sink (it owns the embedded
    # engine; a second process could not open it). Which stages are singletons is the topology's.
    supervisor = Supervisor(all_stages(), tmp_path, copies=3)
    started = Counter(child.stage for child in supervisor.children)
    for spec in STAGES:
        assert started[spec.name] == (1 if spec.singleton else 3), spec.name
    assert any(spec.singleton for spec in STAGES)


def test_copies_must_be_at_least_one(tmp_path, capsys) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Supervisor(["intake"], tmp_path, copies=0)
    with pytest.raises(SystemExit):
        main(["run", "all", "--copies", "0"])
    assert "at least 1" in capsys.readouterr().err


# --- copies per stage ----------------------------------------------------------------------


def test_copies_parse_as_one_number_or_per_stage() -> None:
    from deploy.local.supervisor import parse_copies

    assert parse_copies("3") == 3
    assert parse_copies("quality=3, generate=2") == {"quality": 3, "generate": 2}
    for bad, why in [
        ("0", "at least 1"),
        ("quality=0", "at least 1"),
        ("qualty=2", "no stage called 'qualty'"),
        ("eventlog=2", "singleton"),
        ("quality", "expected N or stage=N"),
        ("quality=two", "expected stage=N"),
        ("quality=2,quality=3", "named twice"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_copies(bad)


def test_per_stage_copies_start_those_stages_that_often_and_the_rest_once(tmp_path) -> None:
    supervisor = Supervisor(all_stages(), tmp_path, copies={"quality": 3, "generate": 2})
    started = Counter(child.stage for child in supervisor.children)
    assert started == Counter({**dict.fromkeys(all_stages(), 1), "quality": 3, "generate": 2})
    # Copies have stable names (their transactional ids); a stage run once keeps its own name.
    assert [c.name for c in supervisor.children if c.stage == "quality"] == [
        "quality-0",
        "quality-1",
        "quality-2",
    ]
    assert [c.name for c in supervisor.children if c.stage == "intake"] == ["intake"]


def test_configured_copies_apply_unless_the_command_line_says_otherwise(tmp_path) -> None:
    from gateway.cli.pipeline import merged_copies

    settings = SupervisorSettings(copies={"quality": 2})
    configured = Supervisor(["intake", "quality"], tmp_path, settings=settings)
    assert [c.name for c in configured.children] == ["intake", "quality-0", "quality-1"]
    # `--copies generate=2` adds to the configured copies; a plain `--copies 1` replaces them.
    assert merged_copies(settings.copies, {"generate": 2}) == {"quality": 2, "generate": 2}
    assert merged_copies(settings.copies, 1) == 1
    assert merged_copies(settings.copies, None) == {"quality": 2}
    with pytest.raises(ValueError, match="no stage called 'nope'"):
        Supervisor(["intake"], tmp_path, settings=SupervisorSettings(copies={"nope": 2}))


def test_run_all_refuses_bad_copies_before_starting_anything(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["run", "all", "--copies", "eventlog=2"])
    assert "singleton" in capsys.readouterr().err


def test_each_live_process_reports_its_cpu_seconds(tmp_path) -> None:
    supervisor = _supervisor(tmp_path, ["healthy"])
    supervisor.start()
    try:
        readings = supervisor.cpu_seconds()
        assert set(readings) == {"healthy"}
        assert readings["healthy"] >= 0.0
    finally:
        supervisor.stop()
    assert supervisor.cpu_seconds() == {}


def test_cpu_seconds_are_the_kernels_count_for_the_process() -> None:
    from deploy.local.supervisor import process_cpu_seconds

    before = process_cpu_seconds(os.getpid())
    assert before is not None
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:
        pass
    after = process_cpu_seconds(os.getpid())
    assert after is not None and after > before
    assert process_cpu_seconds(2**22 + 12345) is None  # no such process
