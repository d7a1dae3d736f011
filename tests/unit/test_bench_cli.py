"""`lightbox bench pipeline`'s options reach the bench, and its help tells the defaults the bench
really uses (the CLI does not import the bench module, so the numbers are written in both)."""

from __future__ import annotations

import inspect

import pytest

from gateway.cli import harness as cli_harness
from gateway.cli.main import build_parser
from gateway.harness import bench


def test_defaults_are_the_bench_s_and_the_help_says_them(monkeypatch: pytest.MonkeyPatch) -> None:
    warmup_default = inspect.signature(bench.run_pipeline_bench).parameters["warmup"].default
    seen: dict[str, object] = {}
    monkeypatch.setattr(bench, "run_pipeline_bench", lambda settings, **kwargs: seen.update(kwargs) or 0)
    args = build_parser().parse_args(["bench", "pipeline"])
    assert cli_harness.cmd_bench(args) == 0
    assert seen["jobs"] is None and seen["poll_s"] is None  # the bench's own defaults apply
    assert seen["warmup"] == warmup_default
    help_text = " ".join(build_parser()._subparsers._group_actions[0].choices["bench"].format_help().split())
    assert f"default {bench.DEFAULT_JOBS}" in help_text
    assert f"default {bench.BURST_POLL_S:g} in burst, {bench.SEQUENTIAL_POLL_S:g} in sequential" in help_text


def test_options_are_passed_through(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}
    monkeypatch.setattr(bench, "run_pipeline_bench", lambda settings, **kwargs: seen.update(kwargs) or 0)
    argv = ["bench", "pipeline", "--jobs", "48", "--warmup", "0", "--poll", "1.5", "--mode", "sequential"]
    assert cli_harness.cmd_bench(build_parser().parse_args(argv)) == 0
    assert (seen["jobs"], seen["warmup"], seen["poll_s"], seen["mode"]) == (48, 0, 1.5, "sequential")


@pytest.mark.parametrize("argv", [["--poll", "0"], ["--poll", "-1"], ["--warmup", "-2"]])
def test_nonsense_values_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["bench", "pipeline", *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "at least 0" in err or "more than 0 seconds" in err
