"""What one generation used, as event attributes: the event log's cost and images-per-GPU-hour
figures (processors/eventlog/sql/compute_usage.sql) read them, priced by `costs` in
configuration.

The backend's own compute time is counted on the device it ran on (a diffusers model on a GPU or
on the CPU, the compositor on the CPU); a remote backend is counted in calls, its time being
someone else's machine."""

from __future__ import annotations

from collections.abc import Sequence

from gpu_workers.backends.base import GeneratedImage

REMOTE = "remote"
CPU_DEVICES = ("", "cpu")
# What usage_attributes may write: what compute_usage.sql and the job_latest view sum.
USAGE_KEYS = ("gpu_ms", "cpu_ms", "api_calls")


def usage_attributes(backend: str, images: Sequence[GeneratedImage]) -> dict[str, str]:
    if backend == REMOTE:
        calls = sum(int(image.extra.get("attempts", "1") or 1) for image in images)
        return {"api_calls": str(calls)}
    compute_ms = sum(image.compute_ms for image in images)
    device = images[0].extra.get("device", "cpu") if images else "cpu"
    kind = "cpu_ms" if device in CPU_DEVICES else "gpu_ms"
    return {kind: f"{compute_ms:.1f}", "device": device or "cpu"}
