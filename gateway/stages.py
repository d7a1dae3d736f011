"""Which class runs each stage, and how one stage process starts."""

from __future__ import annotations

import asyncio
import importlib

from processors.config import Settings
from processors.logs import configure_logging
from processors.runtime.runner import StageRunner
from processors.runtime.stage import Stage, StageContext

# In flow order; the event-log sink last. Imported lazily: a stage process loads only its own code.
STAGES: dict[str, str] = {
    "intake": "processors.stages.intake:IntakeStage",
    "references": "processors.stages.references:ReferencesStage",
    "prompt": "processors.stages.prompt:PromptStage",
    "generate": "gpu_workers.worker:GenerateStage",
    "quality": "processors.stages.quality:QualityStage",
    "postprocess": "processors.stages.postprocess:PostprocessStage",
    "publish": "processors.stages.publish:PublishStage",
    "eventlog": "processors.eventlog.sink:EventLogSink",
}


def stage_class(name: str) -> type[Stage]:
    try:
        module_name, class_name = STAGES[name].split(":")
    except KeyError:
        raise SystemExit(f"unknown stage {name!r}; choose one of: {', '.join(STAGES)}, all") from None
    return getattr(importlib.import_module(module_name), class_name)


async def run_stage(name: str, settings: Settings, max_batches: int | None = None) -> None:
    stage = stage_class(name)(StageContext(settings, name))
    runner = StageRunner(stage)
    runner.install_signal_handlers()
    await runner.run(max_batches=max_batches)


def main_run_stage(name: str, settings: Settings) -> None:
    configure_logging(settings.log_level)
    asyncio.run(run_stage(name, settings))
