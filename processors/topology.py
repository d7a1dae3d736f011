"""The pipeline's shape as data: every stage in flow order, what it reads and what it writes.

This is the one home of the flow. The CLI's stage choices, `lightbox topology`, `lightbox lag`,
the `run all` supervisor and the replay tool read it without importing any stage's code (a stage
process imports only its own module, through `import_path`). Each stage class declares the same
`inputs` and `outputs`; a unit test checks that the classes and this table agree and that the
graph is well formed.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.topics import COMPACTED, RUNTIME_TOPICS, SCHEMA_OF, Topic


@dataclass(frozen=True)
class StageSpec:
    name: str
    import_path: str  # "module:Class"
    inputs: tuple[Topic, ...]
    outputs: tuple[Topic, ...]
    # Exactly one process may run it (the event-log sink owns the embedded ClickHouse engine).
    singleton: bool = False
    summary: str = ""


# Every stage may also write pipeline events and dead letters: the runtime adds those, so they
# are not listed per stage.
RUNTIME_OUTPUTS: tuple[Topic, ...] = tuple(t for t in Topic if t in RUNTIME_TOPICS)

# Topics nobody in the pipeline consumes: the published assets are for downstream systems.
TERMINAL_TOPICS: frozenset[Topic] = frozenset({Topic.ASSETS_PUBLISHED, Topic.PIPELINE_DLQ})

# Topics written by people and tools outside the stages (upstream catalogue, reviewers).
EXTERNAL_INPUTS: frozenset[Topic] = frozenset({Topic.CATALOG_EVENTS, Topic.REVIEW_DECISIONS})

STAGES: tuple[StageSpec, ...] = (
    StageSpec(
        "intake",
        "processors.stages.intake:IntakeStage",
        (Topic.CATALOG_EVENTS,),
        (Topic.JOBS_ACCEPTED, Topic.INTAKE_SEEN, Topic.CATALOG_EVENTS),
        summary="validate, de-duplicate and fan catalogue events out into jobs",
    ),
    StageSpec(
        "references",
        "processors.stages.references:ReferencesStage",
        (Topic.JOBS_ACCEPTED,),
        (Topic.JOBS_REFERENCED,),
        summary="download, decode and store every reference image (persist first)",
    ),
    StageSpec(
        "prompt",
        "processors.stages.prompt:PromptStage",
        (Topic.JOBS_REFERENCED,),
        (Topic.GENERATION_REQUESTS,),
        summary="render the versioned template and route the job to a model",
    ),
    StageSpec(
        "generate",
        "gpu_workers.worker:GenerateStage",
        (Topic.GENERATION_REQUESTS,),
        (Topic.GENERATION_RESULTS,),
        summary="batched generation on the routed backend, with failover",
    ),
    StageSpec(
        "quality",
        "processors.stages.quality:QualityStage",
        (Topic.GENERATION_RESULTS,),
        (Topic.ASSETS_SCORED, Topic.GENERATION_REQUESTS),
        summary="score every candidate; retry with adjusted parameters, or pass on",
    ),
    StageSpec(
        "postprocess",
        "processors.stages.postprocess:PostprocessStage",
        (Topic.ASSETS_SCORED,),
        (Topic.ASSETS_READY,),
        summary="channel derivatives with lineage embedded",
    ),
    StageSpec(
        "publish",
        "processors.stages.publish:PublishStage",
        (Topic.ASSETS_READY, Topic.REVIEW_DECISIONS),
        (Topic.ASSETS_PUBLISHED,),
        summary="hold for review or approve, then export to the destination",
    ),
    StageSpec(
        "eventlog",
        "processors.eventlog.sink:EventLogSink",
        (Topic.PIPELINE_EVENTS,),
        (),
        singleton=True,
        summary="pipeline events into ClickHouse; answers event-log queries",
    ),
)

STAGE_NAMES: tuple[str, ...] = tuple(spec.name for spec in STAGES)


class UnknownStage(KeyError):
    def __str__(self) -> str:
        return f"unknown stage {self.args[0]!r}; choose one of: {', '.join(STAGE_NAMES)}"


def stage_spec(name: str) -> StageSpec:
    for spec in STAGES:
        if spec.name == name:
            return spec
    raise UnknownStage(name)


def consumers_of(topic: Topic) -> list[StageSpec]:
    return [spec for spec in STAGES if topic in spec.inputs]


def producers_of(topic: Topic) -> list[StageSpec]:
    return [spec for spec in STAGES if topic in spec.outputs]


def allowed_outputs(spec: StageSpec) -> frozenset[Topic]:
    """What the runner lets this stage produce: its declared outputs plus the runtime's own."""
    return frozenset(spec.outputs) | frozenset(RUNTIME_OUTPUTS)


def is_changelog(topic: Topic) -> bool:
    return topic in COMPACTED


def job_input(spec: StageSpec) -> Topic | None:
    """The stage's one input that carries job records, or None (intake reads catalogue events,
    the sink pipeline events). A replay from a stage re-sends the job to this topic."""
    topics = [topic for topic in spec.inputs if SCHEMA_OF[topic] == "job"]
    return topics[0] if len(topics) == 1 else None


# The stages a job can be replayed from, in flow order.
JOB_STAGES: tuple[str, ...] = tuple(spec.name for spec in STAGES if job_input(spec) is not None)
