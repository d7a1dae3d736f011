"""PipelineSession.wait_for asks the event log every poll_s until every job is terminal: the
bench asks less often in a burst, since each ask costs the cores the pipeline runs on."""

from __future__ import annotations

from pathlib import Path

import pytest

import deploy.local.session as session_module
from deploy.local.session import PipelineSession
from processors.config import Settings


class _Scripted(PipelineSession):
    """States from a script, one answer per ask, instead of the event log."""

    def __init__(self, settings: Settings, answers: list[dict[str, str]]) -> None:
        super().__init__(settings, prefix="wait-test.")
        self.answers = answers
        self.asks = 0

    def states(self, job_ids: list[str]) -> dict[str, str]:
        answer = self.answers[min(self.asks, len(self.answers) - 1)]
        self.asks += 1
        return answer


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path)


@pytest.mark.parametrize("poll_s", [0.5, 2.0])
def test_wait_for_sleeps_poll_s_between_asks(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, poll_s: float
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(session_module.time, "sleep", slept.append)
    answers = [{"a": "running"}, {"a": "published", "b": "quality"}, {"a": "published", "b": "published"}]
    session = _Scripted(settings, answers)
    states = session.wait_for(["a", "b"], timeout_s=60, poll_s=poll_s)
    assert states == {"a": "published", "b": "published"}
    assert session.asks == 3
    assert slept == [poll_s, poll_s]  # none after the ask that saw every job done


def test_wait_for_gives_up_at_the_timeout(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(session_module.time, "monotonic", lambda: clock[0])

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    monkeypatch.setattr(session_module.time, "sleep", sleep)
    session = _Scripted(settings, [{"a": "running"}])
    assert session.wait_for(["a"], timeout_s=10, poll_s=2.0) == {"a": "running"}
    assert session.asks == 5  # at 0, 2, 4, 6 and 8 s


def test_wait_for_asks_more_often_near_the_end(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(session_module.time, "sleep", slept.append)
    ids = [str(i) for i in range(10)]
    answers = [
        dict.fromkeys(ids, "running"),
        {**dict.fromkeys(ids[:9], "published"), "9": "running"},
        {**dict.fromkeys(ids[:9], "published"), "9": "running"},
        dict.fromkeys(ids, "published"),
    ]
    session = _Scripted(settings, answers)
    session.wait_for(ids, timeout_s=60, poll_s=2.0, last_poll_s=0.25)
    assert slept == [2.0, 0.25, 0.25]  # nine of ten done: the end is near
