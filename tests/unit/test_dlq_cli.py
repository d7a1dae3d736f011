"""The dead-letter CLI's progress line and rate pacing, and its usage errors."""

from __future__ import annotations

import io

import pytest

from gateway.cli.dlq import ProgressLine
from gateway.cli.main import main
from gateway.ops import dlq as dlq_ops
from gateway.ops.dlq import _Pacer


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_one_redrawn_bar() -> None:
    stream = Tty()
    progress = ProgressLine(stream)
    for done in range(0, 11):
        progress(done, 10)
    text = stream.getvalue()
    assert text.count("\r") == 11 and text.endswith("10/10 offsets (100%, " + text.rsplit("(100%, ", 1)[1])
    assert "[" + "#" * ProgressLine.WIDTH + "]" in text and text.endswith("\n")


def test_a_log_gets_a_plain_line_every_tenth() -> None:
    stream = io.StringIO()
    progress = ProgressLine(stream)
    for done in range(0, 101):
        progress(done, 100)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 11 and "\r" not in stream.getvalue()
    assert lines[-1].startswith("replay progress: 100/100 offsets (100%")


def test_the_pacer_holds_to_its_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(dlq_ops.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(dlq_ops.time, "sleep", lambda s: clock.__setitem__(0, clock[0] + s))
    pacer = _Pacer(200.0)
    for _ in range(4):
        pacer.wait(10)
    assert clock[0] == pytest.approx(100.2)  # 40 messages at 200/s: slept up to 0.2 s
    unpaced = _Pacer(None)
    unpaced.wait(10**6)
    assert unpaced.sent == 10**6 and clock[0] == pytest.approx(100.2)


@pytest.mark.parametrize(
    "argv",
    [
        ["dlq", "replay", "--rate", "0"],
        ["dlq", "replay", "--from-offset", "5", "--to-offset", "4"],
    ],
)
def test_bad_replay_options_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("error: ")
