"""Every text that enters from outside is bounded where it enters, with an error naming the field
and the limit: review decisions (CLI and HTTP), catalog events (intake's own limits), job ids,
model names, analyst SQL, request sizes. Nothing over a limit is ever sent to Kafka."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

import gateway.ops.review
import gateway.ops.submit
from gateway.cli.main import main
from gateway.ops.entry import MAX_EVENTS_PER_REQUEST, MAX_LINE_CHARS, EntryError, check_review
from gateway.ops.review import submit_decision
from gateway.ops.submit import parse_lines
from gateway.ops.tokens import Role, TokenStore
from gateway.web.app import build_app
from processors.config import ReviewSettings, load_settings
from tests.fixtures.avro_samples import CATALOG_V1

ONE_MB = 1024 * 1024
REVIEW = ReviewSettings()


@pytest.fixture
def sent(monkeypatch) -> list[Any]:
    """What would have been produced to Kafka: nothing leaves the process in these tests."""
    produced: list[Any] = []

    def fake_produce(producer: Any, records: Any) -> int:
        produced.extend(records)
        return len(produced)

    monkeypatch.setattr(gateway.ops.review, "produce_and_confirm", fake_produce)
    monkeypatch.setattr(gateway.ops.submit, "produce_and_confirm", fake_produce)
    return produced


# -- review decisions -------------------------------------------------------------------------


def test_a_one_megabyte_rejection_reason_is_refused_by_the_cli(sent, capsys) -> None:
    # The reproduction: `lightbox review reject JOB --reason <1 MB>`.
    code = main(["review", "reject", "job-1", "--reason", "x" * ONE_MB])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == f"error: --reason: {ONE_MB} characters, at most 2000 (review.max_reason_chars)"
    assert sent == [], "nothing reached the broker"


def test_the_reviewer_is_bounded_too(sent, capsys) -> None:
    assert main(["review", "approve", "job-1", "--reviewer", "r" * 201]) == 2
    assert "--reviewer: 201 characters, at most 200 (review.max_reviewer_chars)" in capsys.readouterr().err
    assert sent == []


def test_a_reason_at_the_limit_is_sent(sent, capsys) -> None:
    assert main(["review", "reject", "job-1", "--reason", "y" * REVIEW.max_reason_chars]) == 0
    (record,) = sent
    assert record[1] == b"job-1"


def test_control_characters_and_long_job_ids_are_refused(sent, capsys) -> None:
    assert main(["review", "reject", "job-1", "--reason", "bad\x00byte"]) == 2
    assert "--reason: contains a control character U+0000" in capsys.readouterr().err
    assert main(["review", "approve", "j" * 300]) == 2
    assert "JOB: 300 characters, at most 256" in capsys.readouterr().err
    assert sent == []


def test_every_caller_of_submit_decision_is_bounded(sent) -> None:
    with pytest.raises(EntryError) as caught:
        submit_decision(load_settings(), "job-1", "REJECT", "ana", "z" * (REVIEW.max_reason_chars + 1))
    assert (caught.value.field, caught.value.limit) == ("reason", REVIEW.max_reason_chars)
    assert sent == []


def test_the_limits_come_from_the_settings() -> None:
    tight = ReviewSettings(max_reason_chars=5)
    check_review(tight, "job-1", "ana", "12345")
    with pytest.raises(EntryError, match=r"reason: 6 characters, at most 5 \(review.max_reason_chars\)"):
        check_review(tight, "job-1", "ana", "123456")


# -- catalog events -----------------------------------------------------------------------------


def _event(**product: Any) -> dict[str, Any]:
    event = copy.deepcopy(CATALOG_V1)
    event["product"].update(product)
    return event


def test_catalog_fields_are_bounded_by_intakes_own_limits() -> None:
    parsed = parse_lines(
        [
            json.dumps(_event(title="t" * 100_000)),
            json.dumps(_event(attributes={f"k{i}": "v" for i in range(201)})),
            json.dumps(_event(attributes={"care": "w" * 1025})),
            json.dumps(CATALOG_V1),
        ]
    )
    assert [e.line for e in parsed.errors] == [1, 2, 3]
    assert parsed.errors[0].message == (
        "too_long at product.title: 100000 characters, at most 300 (limits: processors/intake/policy.yaml)"
    )
    assert "too_many_attributes at product.attributes: 201 entries, at most 200" in parsed.errors[1].message
    assert "too_long at product.attributes[" in parsed.errors[2].message
    assert [n for n, _, _ in parsed.events] == [4]


def test_what_is_not_about_size_is_left_to_intake_to_decide_and_record() -> None:
    # An unknown template is intake's to reject (it records the rejection as an event).
    event = copy.deepcopy(CATALOG_V1)
    event["request"]["template_id"] = "no-such-template"
    assert not parse_lines([json.dumps(event)]).errors


def test_an_overlong_line_is_refused_before_it_is_parsed(tmp_path, sent, capsys) -> None:
    file = tmp_path / "events.jsonl"
    file.write_text(json.dumps(CATALOG_V1) + "\n" + " " * (MAX_LINE_CHARS + 1) + "\n")
    assert main(["submit", str(file)]) == 2
    err = capsys.readouterr().err
    assert f"line 2: {MAX_LINE_CHARS + 2} characters of JSON in one event; at most {MAX_LINE_CHARS}" in err
    assert sent == []


def test_the_cli_publishes_nothing_from_a_file_with_an_oversized_event(tmp_path, sent, capsys) -> None:
    file = tmp_path / "events.jsonl"
    file.write_text(json.dumps(CATALOG_V1) + "\n" + json.dumps(_event(title="t" * 5000)) + "\n")
    assert main(["submit", str(file)]) == 2
    assert "line 2: too_long at product.title: 5000 characters, at most 300" in capsys.readouterr().err
    assert sent == []


# -- other CLI text -----------------------------------------------------------------------------


def test_job_ids_model_names_and_analyst_sql_are_bounded(capsys) -> None:
    assert main(["status", "j" * 257]) == 2
    assert "JOB: 257 characters, at most 256" in capsys.readouterr().err
    assert main(["replay", "job-1", "--model", "m" * 300]) == 2
    assert "--model: 300 characters, at most 256" in capsys.readouterr().err
    # Refused before anything is sent: no event-log sink runs here.
    assert main(["sql", "SELECT '" + "q" * 70_000 + "'"]) == 1
    assert "at most 65536 (clickhouse.analyst_max_query_chars)" in capsys.readouterr().err


# -- HTTP ---------------------------------------------------------------------------------------


@pytest.fixture
async def http(sent, tmp_path) -> AsyncIterator[TestClient]:
    # The app builds its producer and stores without connecting: every request below is refused
    # before MinIO or Kafka would be asked anything.
    settings = load_settings()
    gateway = settings.gateway.model_copy(
        update={
            "tokens_file": str(tmp_path / "tokens.json"),
            "session_key_file": str(tmp_path / "session.key"),
        }
    )
    settings = settings.model_copy(update={"gateway": gateway})
    token = TokenStore.of(settings).create("admin-bot", Role.ADMIN)[1]
    app = build_app(settings)
    async with TestClient(TestServer(app, host="127.0.0.1"), headers=_bearer(token)) as client:
        yield client


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_the_decision_route_refuses_a_long_reason_naming_the_field_and_limit(http, sent) -> None:
    # The 1 MB reason is refused by size before it is parsed.
    response = await http.post("/v1/jobs/job-1/decision", json={"decision": "reject", "reason": "x" * ONE_MB})
    assert response.status == 413
    assert response.content_type == "application/problem+json"

    # Under the body limit, over the field's own: 400 naming the field and the limit.
    response = await http.post("/v1/jobs/job-1/decision", json={"decision": "reject", "reason": "x" * 5000})
    assert response.status == 400
    assert response.content_type == "application/problem+json"
    body = await response.json()
    assert (body["field"], body["limit"], body["status"]) == ("reason", REVIEW.max_reason_chars, 400)
    assert body["detail"] == "reason: 5000 characters, at most 2000 (review.max_reason_chars)"

    # The reviewer is the token's name: a client cannot send one.
    response = await http.post("/v1/jobs/job-1/decision", json={"decision": "approve", "reviewer": "eve"})
    assert response.status == 400
    assert (await response.json())["field"] == "reviewer"
    assert sent == []


async def test_a_long_job_id_in_the_url_is_refused(http) -> None:
    for path in (f"/v1/jobs/{'j' * 300}", f"/v1/jobs/{'j' * 300}/decision"):
        if path.endswith("decision"):
            response = await http.post(path, json={"decision": "approve"})
        else:
            response = await http.get(path)
        assert response.status == 400, path
        body = await response.json()
        assert (body["field"], body["limit"]) == ("job_id", 256), path


async def test_event_posts_are_bounded_in_count_and_in_their_fields(http, sent) -> None:
    response = await http.post("/v1/events", json={"events": [CATALOG_V1] * (MAX_EVENTS_PER_REQUEST + 1)})
    assert response.status == 413
    assert f"at most {MAX_EVENTS_PER_REQUEST}" in (await response.json())["detail"]

    response = await http.post("/v1/events", json={"events": [CATALOG_V1, _event(title="t" * 100_000)]})
    assert response.status == 400
    (problem,) = (await response.json())["errors"]
    assert problem["index"] == 1
    assert "product.title" in problem["detail"] and "at most 300" in problem["detail"]
    assert sent == []


async def test_undecodable_cookie_and_csrf_bytes_are_no_session_not_a_500(http) -> None:
    # aiohttp hands bytes >= 0x80 over as surrogates; a str compare_digest would raise on them.
    # A client of its own: no bearer token, so the cookie is what the gateway reads.
    cookie = {"Cookie": "lightbox_session=v1.a.b.1.\u00e9"}
    async with aiohttp.ClientSession() as plain:
        for path in ("/healthz", "/v1/whoami", "/review"):
            async with plain.get(http.make_url(path), headers=cookie, allow_redirects=False) as response:
                assert response.status < 500, path
        form = {"token": "lb_x_\u00e9", "csrf_token": "\u00e9"}
        async with plain.post(http.make_url("/login"), data=form, allow_redirects=False) as response:
            assert response.status < 500
