"""`lightbox metrics` without an event log: its help, its usage errors, the window it reads, the
cost model's pricing, the generated Grafana dashboard being the one the SQL files make, and what
generate records of the compute it used."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from gateway.cli.main import main
from gateway.cli.metrics import since_ms_of
from gpu_workers.backends.base import GeneratedImage
from gpu_workers.usage import usage_attributes
from processors.config import BackendPrice, CostSettings
from processors.eventlog.figures import price

ROOT = Path(__file__).resolve().parents[2]


def test_help_names_every_figure_and_grouping(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["metrics", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for words in ("artifact rate", "first-pass yield", "p50/p95/p99", "images per GPU-hour",
                  "cost", "dead letters", "consumer lag", "docs/analytics.md", "--since", "--json",
                  "{stage,model,backend,template,campaign}"):  # fmt: skip
        assert words in out, words
    main_help = subprocess.run(
        [sys.executable, "-m", "gateway.cli.main", "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert "lightbox metrics" in main_help.stdout


@pytest.mark.parametrize("argv", [["--since", "1y"], ["--since", "0h"], ["--since=-1h"]])
def test_a_bad_window_is_a_usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["metrics", *argv]) == 2
    assert "--since must be a span" in capsys.readouterr().err


def test_the_window() -> None:
    now = 10 * 86_400_000
    assert since_ms_of("all", now) == 0
    assert since_ms_of("90s", now) == now - 90_000
    assert since_ms_of("1h", now) == now - 3_600_000
    assert since_ms_of("2w", now) == 0  # before the epoch: everything


def test_compute_is_priced_per_backend_and_unknown_backends_named() -> None:
    costs = CostSettings(
        backends={
            "gpu": BackendPrice(gpu_second=0.001, cpu_second=0.0001),
            "api": BackendPrice(api_call=0.05),
        }
    )
    usage = [
        {"backend": "gpu", "gpu_seconds": 100.0, "cpu_seconds": 10.0, "api_calls": 0},
        {"backend": "api", "gpu_seconds": 0.0, "cpu_seconds": 0.0, "api_calls": 4},
        {"backend": "mystery", "gpu_seconds": 5.0, "cpu_seconds": 0.0, "api_calls": 0},
    ]
    assert price(costs, usage) == {
        "total": pytest.approx(0.1 + 0.001 + 0.2),
        "unpriced_backends": ["mystery"],
    }


def test_the_committed_grafana_dashboard_is_the_one_the_sql_files_make() -> None:
    check = subprocess.run(
        [sys.executable, "scripts/grafana_dashboard.py", "--check"], capture_output=True, text=True, cwd=ROOT
    )
    assert check.returncode == 0, check.stderr


def _image(ms: float, **extra: str) -> GeneratedImage:
    return GeneratedImage("j#0", Image.new("RGB", (1, 1)), "v1", ms, extra)


def test_generate_records_compute_on_the_device_it_ran_on() -> None:
    assert usage_attributes("diffusers", [_image(1500, device="cuda"), _image(500, device="cuda")]) == {
        "gpu_ms": "2000.0",
        "device": "cuda",
    }
    assert usage_attributes("diffusers", [_image(700, device="cpu")]) == {"cpu_ms": "700.0", "device": "cpu"}
    assert usage_attributes("compositor", [_image(12)]) == {"cpu_ms": "12.0", "device": "cpu"}
    assert usage_attributes("remote", [_image(900, attempts="2"), _image(800)]) == {"api_calls": "3"}
