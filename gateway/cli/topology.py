"""`lightbox topology`: the flow as processors/topology.py declares it, under this configuration's
topic prefix. Reads the declaration only: no stage's code is imported."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from gateway.cli.common import Commands, settings_of
from processors.config import Settings
from processors.topology import (
    EXTERNAL_INPUTS,
    RUNTIME_OUTPUTS,
    STAGES,
    TERMINAL_TOPICS,
    consumers_of,
    is_changelog,
    producers_of,
)
from schemas.topics import Topic, TopicNames


def _group(settings: Settings, stage: str) -> str:
    from processors.kafka_clients import group_id_for

    return group_id_for(settings, stage)


def _where_from(topic: Topic) -> str:
    """Who writes an input: the stages, or where it comes from."""
    if topic in RUNTIME_OUTPUTS:
        return "<- every stage"
    writers = [spec.name for spec in producers_of(topic)]
    if topic in EXTERNAL_INPUTS:
        writers.append("outside the pipeline")
    return "<- " + ", ".join(writers) if writers else "(written by no stage)"


def _where_to(topic: Topic) -> str:
    """Who reads an output: the stages, or why nobody does."""
    readers = [spec.name for spec in consumers_of(topic)]
    if readers:
        return "-> " + ", ".join(readers)
    if is_changelog(topic):
        return "(changelog: compacted state)"
    if topic in TERMINAL_TOPICS:
        return "(terminal: for systems downstream)"
    return "(read by no stage)"


def describe(settings: Settings) -> dict[str, Any]:
    names = TopicNames(settings.kafka.topic_prefix)
    return {
        "topic_prefix": settings.kafka.topic_prefix,
        "stages": [
            {
                "name": spec.name,
                "summary": spec.summary,
                "consumer_group": _group(settings, spec.name),
                "inputs": [names(t) for t in spec.inputs],
                "outputs": [names(t) for t in spec.outputs],
                "singleton": spec.singleton,
                "import_path": spec.import_path,
            }
            for spec in STAGES
        ],
        "every_stage_also_writes": [names(t) for t in RUNTIME_OUTPUTS],
        "external_inputs": [names(t) for t in sorted(EXTERNAL_INPUTS)],
        "terminal_topics": [names(t) for t in sorted(TERMINAL_TOPICS)],
    }


def print_flow(settings: Settings) -> None:
    names = TopicNames(settings.kafka.topic_prefix)
    prefix = settings.kafka.topic_prefix
    print(f"topic prefix: {prefix!r}" if prefix else "topic prefix: none")
    width = max(len(names(t)) for t in Topic)

    def rows(label: str, topics: tuple[Topic, ...], where: Callable[[Topic], str]) -> None:
        if not topics:
            print(f"   {label:<6} nothing of its own")
        for index, topic in enumerate(topics):
            print(f"   {label if index == 0 else '':<6} {names(topic):<{width}}  {where(topic)}")

    for number, spec in enumerate(STAGES, start=1):
        mark = "   singleton: one process only" if spec.singleton else ""
        print(f"\n{number}. {spec.name}   group {_group(settings, spec.name)}{mark}")
        print(f"   {spec.summary}")
        rows("reads", spec.inputs, _where_from)
        rows("writes", spec.outputs, _where_to)
    print(f"\nevery stage also writes: {', '.join(names(t) for t in RUNTIME_OUTPUTS)}")
    print(f"from outside the pipeline: {', '.join(names(t) for t in sorted(EXTERNAL_INPUTS))}")
    print(f"terminal (no stage reads them): {', '.join(names(t) for t in sorted(TERMINAL_TOPICS))}")


def cmd_topology(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    if args.json:
        print(json.dumps(describe(settings), indent=2))
    else:
        print_flow(settings)
    return 0


def register(commands: Commands) -> None:
    p = commands.add_parser(
        "topology",
        help="the flow: each stage's input and output topics, consumer group, singletons",
        description="The stages in flow order as processors/topology.py declares them: what each "
        "reads and writes (topic names with the configured prefix), who reads each output, each "
        "stage's consumer group, and which stages may run only once.",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_topology)
