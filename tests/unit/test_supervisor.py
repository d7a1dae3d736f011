"""`run all`'s supervisor restarts a stage that dies, and gives up loudly on one that cannot start."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from deploy.local.supervisor import StageCrashLoop, Supervisor, all_stages
from gateway.cli.main import main
from processors.topology import STAGES


def test_a_stage_that_cannot_start_is_reported_with_its_log(tmp_path) -> None:
    # An unknown stage name makes `lightbox run` exit non-zero at once: a stand-in for a bad config.
    supervisor = Supervisor(["no-such-stage"], tmp_path, env={"LIGHTBOX_HOME": str(tmp_path)})
    supervisor.start()
    try:
        with pytest.raises(StageCrashLoop, match=r"(?s)no-such-stage failed 3 times.*invalid choice"):
            for _ in range(300):
                supervisor.check()
                time.sleep(0.2)
    finally:
        supervisor.stop()


def test_a_killed_stage_is_restarted_not_given_up_on(tmp_path) -> None:
    supervisor = Supervisor(["no-such-stage"], tmp_path, env={"LIGHTBOX_HOME": str(tmp_path)})
    child = supervisor.children[0]
    child.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    child.started_at = time.monotonic()
    child.process.send_signal(signal.SIGKILL)
    child.process.wait()
    notes = supervisor.check()
    assert child.quick_failures == 0, "a kill by signal is not a failure to start"
    assert notes and "restarting" in notes[0]
    supervisor.stop()


def test_each_process_gets_its_own_metrics_port(tmp_path) -> None:
    supervisor = Supervisor(["intake", "generate"], tmp_path, copies=2, metrics_base_port=9400)
    assert [c.metrics_port for c in supervisor.children] == [9400, 9401, 9402, 9403]
    assert [c.stage for c in supervisor.children] == ["intake", "intake", "generate", "generate"]
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
