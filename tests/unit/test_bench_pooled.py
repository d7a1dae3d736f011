"""The bench's reference for its ratio: the baseline run before and after the pipeline, pooled."""

from __future__ import annotations

import pytest

from gateway.harness.baseline import BaselineResult
from gateway.harness.bench import _pooled


def _run(published: int, elapsed_s: float, quality_cpu: float) -> BaselineResult:
    return BaselineResult(
        jobs=published, published=published, elapsed_s=elapsed_s, cpu_s={"quality": quality_cpu}
    )


def test_two_baseline_runs_pool_into_one_rate_and_one_cpu_per_job() -> None:
    # A machine that slowed down between the runs: the pooled rate lies between the two.
    fast, slow = _run(48, 8.0, 2.4), _run(48, 12.0, 3.6)
    pooled, services = _pooled([(fast, {"kafka": 0.2, "minio": 1.0}), (slow, {"kafka": 0.4, "minio": 1.4})])
    assert pooled.jobs == pooled.published == 96
    assert pooled.jobs_per_s == pytest.approx(96 / 20.0)
    assert slow.jobs_per_s < pooled.jobs_per_s < fast.jobs_per_s
    assert pooled.cpu_s["quality"] / pooled.jobs == pytest.approx(6.0 / 96)
    assert services == pytest.approx({"kafka": 0.6, "minio": 2.4})


def test_a_service_measured_in_one_run_only_is_left_out() -> None:
    pooled, services = _pooled(
        [(_run(8, 1.0, 0.1), {"kafka": 0.2}), (_run(8, 1.0, 0.1), {"kafka": 0.1, "minio": 0.3})]
    )
    assert services == pytest.approx({"kafka": 0.3})
    assert pooled.published == 16
