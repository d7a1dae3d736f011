"""`lightbox submit` parsing: line-numbered errors, nothing published from a bad file."""

from __future__ import annotations

import json

from gateway.cli.main import main
from gateway.ops.submit import parse_lines
from tests.fixtures.avro_samples import CATALOG_V1


def test_valid_lines_parse_and_iso_timestamps_are_accepted() -> None:
    event = {**CATALOG_V1, "occurred_at": "2026-11-21T10:00:00Z"}
    parsed = parse_lines([json.dumps(CATALOG_V1), "", "# comment", json.dumps(event)])
    assert not parsed.errors
    assert [n for n, _, _ in parsed.events] == [1, 4]
    assert parsed.events[1][1]["occurred_at"] == 1_795_255_200_000


def test_invalid_lines_are_reported_with_their_numbers() -> None:
    bad_enum = {**CATALOG_V1, "event_type": "DELETE_EVERYTHING"}
    missing = {k: v for k, v in CATALOG_V1.items() if k != "product"}
    parsed = parse_lines(
        [json.dumps(CATALOG_V1), "{not json", json.dumps(bad_enum), json.dumps(missing), "[1]"]
    )
    assert [e.line for e in parsed.errors] == [2, 3, 4, 5]
    assert "not valid JSON" in parsed.errors[0].message
    assert "event_type" in parsed.errors[1].message
    assert "product" in parsed.errors[2].message
    assert len(parsed.events) == 1


def test_cli_publishes_nothing_from_a_file_with_an_invalid_line(tmp_path, capsys) -> None:
    # No broker is configured on this port: if the CLI tried to publish, it would fail differently.
    file = tmp_path / "events.jsonl"
    file.write_text(json.dumps(CATALOG_V1) + "\n" + "{broken\n")
    code = main(["submit", str(file)])
    err = capsys.readouterr().err
    assert code == 2
    assert "line 2" in err and "nothing was published" in err


def test_cli_reports_a_missing_file(tmp_path, capsys) -> None:
    assert main(["submit", str(tmp_path / "nope.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err
