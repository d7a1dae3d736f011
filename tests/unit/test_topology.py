"""The declared topology (processors/topology.py) is a well-formed graph, the stage classes say the
same as the declaration, and the CLI shows it without importing any stage's code."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli.main import build_parser, main
from processors.topology import (
    EXTERNAL_INPUTS,
    JOB_STAGES,
    RUNTIME_OUTPUTS,
    STAGE_NAMES,
    STAGES,
    TERMINAL_TOPICS,
    StageSpec,
    consumers_of,
    is_changelog,
    job_input,
    stage_spec,
)
from schemas.topics import SCHEMA_OF, Topic

ROOT = Path(__file__).resolve().parents[2]


def _stage_graph() -> dict[str, set[str]]:
    """Stage -> the stages that read something it writes."""
    return {
        # A stage writing its own input (intake re-keying catalogue events to their slot's
        # partition) is a hop within the stage, not a cycle of the flow.
        spec.name: {
            reader.name
            for topic in spec.outputs
            for reader in consumers_of(topic)
            if reader.name != spec.name
        }
        for spec in STAGES
    }


def _cycles(graph: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """Every elementary cycle, each rotated to start at its smallest stage name."""
    found: set[tuple[str, ...]] = set()

    def walk(path: list[str]) -> None:
        for nxt in graph[path[-1]]:
            if nxt == path[0]:
                i = path.index(min(path))
                found.add(tuple(path[i:] + path[:i]))
            elif nxt not in path:
                walk([*path, nxt])

    for start in graph:
        walk([start])
    return found


def test_every_output_is_read_kept_as_state_or_terminal() -> None:
    for spec in STAGES:
        for topic in (*spec.outputs, *RUNTIME_OUTPUTS):
            assert consumers_of(topic) or is_changelog(topic) or topic in TERMINAL_TOPICS, (
                f"{spec.name} writes {topic}, which no stage reads and which is neither a changelog "
                "nor a terminal topic"
            )


def test_every_input_has_a_writer() -> None:
    written = {t for spec in STAGES for t in spec.outputs} | set(RUNTIME_OUTPUTS)
    for spec in STAGES:
        for topic in spec.inputs:
            assert topic in written or topic in EXTERNAL_INPUTS, f"nothing writes {spec.name}'s input {topic}"


def test_every_external_input_is_consumed_and_written_only_by_its_own_reader() -> None:
    # Only intake writes an external input: it re-keys catalogue events to their slot.
    for topic in EXTERNAL_INPUTS:
        readers = consumers_of(topic)
        assert readers, f"{topic} comes from outside but no stage reads it"
        writers = [spec for spec in STAGES if topic in spec.outputs]
        assert all(w in readers for w in writers), f"{topic} is written by a stage that does not read it"


def test_terminal_topics_are_read_by_no_stage() -> None:
    for topic in TERMINAL_TOPICS:
        assert not consumers_of(topic), topic


def test_quality_back_to_generation_requests_is_the_only_cycle() -> None:
    assert _cycles(_stage_graph()) == {("generate", "quality")}
    quality = stage_spec("quality")
    assert Topic.GENERATION_REQUESTS in quality.outputs
    assert [s.name for s in consumers_of(Topic.GENERATION_REQUESTS)] == ["generate"]


def test_cycle_finder_sees_a_second_cycle() -> None:
    # The graph check above is only as good as this: a stage writing back to an earlier one shows.
    graph = {**_stage_graph(), "postprocess": {"publish", "references"}}
    assert ("generate", "quality", "postprocess", "references", "prompt") in _cycles(graph)
    assert len(_cycles(graph)) == 2


def test_every_topic_has_a_place_in_the_flow() -> None:
    placed = set(EXTERNAL_INPUTS) | set(RUNTIME_OUTPUTS)
    placed |= {t for spec in STAGES for t in (*spec.inputs, *spec.outputs)}
    assert placed == set(Topic)


def test_names_are_unique_and_one_stage_is_the_singleton_sink() -> None:
    assert len(set(STAGE_NAMES)) == len(STAGES)
    assert [s.name for s in STAGES if s.singleton] == ["eventlog"]


@pytest.mark.parametrize("spec", STAGES, ids=STAGE_NAMES)
def test_stage_class_declares_what_the_topology_says(spec: StageSpec) -> None:
    module, name = spec.import_path.split(":")
    cls = getattr(importlib.import_module(module), name)
    assert cls.name == spec.name
    assert tuple(cls.inputs) == spec.inputs
    assert tuple(cls.outputs) == spec.outputs
    assert bool(cls.singleton) is spec.singleton


def _subcommand(name: str):  # type: ignore[no-untyped-def]
    parser = build_parser()
    (commands,) = [a for a in parser._actions if a.dest == "command"]
    return commands.choices[name]


def _choices(command: str, dest: str) -> list[str]:
    (action,) = [a for a in _subcommand(command)._actions if a.dest == dest]
    return list(action.choices)


def test_cli_stage_choices_are_the_topology() -> None:
    assert _choices("run", "stage") == [*STAGE_NAMES, "all"]


def test_replay_starts_only_where_a_stage_reads_jobs() -> None:
    assert _choices("replay", "from_stage") == list(JOB_STAGES)
    assert "intake" not in JOB_STAGES and "eventlog" not in JOB_STAGES
    # publish also reads review decisions: its job input is the ready asset.
    assert job_input(stage_spec("publish")) == Topic.ASSETS_READY
    assert all(SCHEMA_OF[job_input(stage_spec(name))] == "job" for name in JOB_STAGES)  # type: ignore[index]


def test_topology_json_lists_every_stage_with_prefixed_topics(monkeypatch, capsys) -> None:
    monkeypatch.setenv("LIGHTBOX_KAFKA__TOPIC_PREFIX", "staging.")
    assert main(["topology", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [s["name"] for s in shown["stages"]] == list(STAGE_NAMES)
    quality = shown["stages"][STAGE_NAMES.index("quality")]
    assert quality["inputs"] == ["staging.generation.results"]
    assert quality["outputs"] == ["staging.assets.scored", "staging.generation.requests"]
    assert quality["consumer_group"] == "staging.lightbox.quality"
    assert [s["name"] for s in shown["stages"] if s["singleton"]] == ["eventlog"]
    assert shown["every_stage_also_writes"] == ["staging.pipeline.events", "staging.pipeline.dlq"]


def test_topology_text_shows_flow_groups_and_where_each_output_goes(monkeypatch, capsys) -> None:
    monkeypatch.setenv("LIGHTBOX_KAFKA__TOPIC_PREFIX", "staging.")
    assert main(["topology"]) == 0
    out = capsys.readouterr().out
    positions = [out.index(f". {name}   group staging.lightbox.{name}") for name in STAGE_NAMES]
    assert positions == sorted(positions), "stages are printed in flow order"
    assert "staging.generation.requests  -> generate" in out
    assert "staging.generation.requests  <- prompt, quality" in out
    assert "staging.intake.seen" in out and "changelog" in out
    assert "eventlog   group staging.lightbox.eventlog   singleton" in out


def test_topology_imports_no_stage_code() -> None:
    code = (
        "import sys\n"
        "from gateway.cli.main import main\n"
        "assert main(['topology']) == 0\n"
        "stage_modules = {spec.import_path.split(':')[0] for spec in __import__('processors.topology',"
        " fromlist=['STAGES']).STAGES}\n"
        "loaded = sorted(m for m in sys.modules if m in stage_modules or m.startswith(('processors.stages',"
        " 'gpu_workers')))\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
