"""How one stage process starts: look the stage up in the topology, import its class, run it."""

from __future__ import annotations

import asyncio
import importlib

from processors.config import Settings
from processors.logs import configure_logging
from processors.runtime.runner import StageRunner
from processors.runtime.stage import Stage, StageContext
from processors.topology import UnknownStage, stage_spec


def stage_class(name: str) -> type[Stage]:
    try:
        module_name, class_name = stage_spec(name).import_path.split(":")
    except UnknownStage as exc:
        raise SystemExit(f"{exc}, all") from None
    return getattr(importlib.import_module(module_name), class_name)


async def run_stage(name: str, settings: Settings, max_batches: int | None = None) -> None:
    stage = stage_class(name)(StageContext(settings, name))
    runner = StageRunner(stage)
    runner.install_signal_handlers()
    await runner.run(max_batches=max_batches)


def main_run_stage(name: str, settings: Settings) -> None:
    configure_logging(settings.log_level)
    asyncio.run(run_stage(name, settings))
