"""PipelineSession runs `copies` processes per stage through its one start(); the chaos suite's
ReplicatedSession is that start with two copies, not a copy of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import deploy.local.session as session_module
from deploy.local.session import PipelineSession
from gateway.harness.chaos.supervision import ReplicatedSession
from processors.config import Settings


class _Recorder:
    made: list[dict[str, Any]] = []

    def __init__(self, stages: list[str], log_dir: Path, **kwargs: Any) -> None:
        self.children: list[object] = []
        _Recorder.made.append(kwargs)

    def start(self) -> None:
        pass


class _NoStack:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def up(self) -> None:
        pass

    def ensure_topics(self) -> None:
        pass

    def ensure_schemas(self) -> None:
        pass


@pytest.mark.parametrize(
    ("make", "copies"),
    [
        (lambda s: PipelineSession(s, "t.", stages=["intake"], progress=lambda _: None), 1),
        (lambda s: PipelineSession(s, "t.", stages=["intake"], progress=lambda _: None, copies=3), 3),
        (lambda s: ReplicatedSession(s, "t.", stages=["intake"], progress=lambda _: None), 2),
    ],
)
def test_the_supervisor_gets_the_sessions_copies(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, make: Any, copies: int
) -> None:
    _Recorder.made.clear()
    monkeypatch.setattr(session_module, "Supervisor", _Recorder)
    monkeypatch.setattr(session_module, "LocalStack", _NoStack)
    monkeypatch.setattr(PipelineSession, "_wait_for_groups", lambda self, timeout_s: None)
    session = make(Settings(home=tmp_path))
    session.start(start_stack=False)
    assert [kwargs["copies"] for kwargs in _Recorder.made] == [copies]
