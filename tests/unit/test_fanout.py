"""Fan-out: one job per asset_type x channel x locale, with deterministic, idempotent ids."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from processors.intake import JOB_NAMESPACE, fan_out, idempotency_key, job_id_for
from schemas.serde import AvroSerde

ACCEPTED_AT = 1_700_000_123_456


def latest_version(template_id: str, pinned: str | None) -> str:
    return pinned or "1.1.0"


def make_event(**request: Any) -> dict[str, Any]:
    return {
        "event_id": "evt-1",
        "event_type": "ASSET_REQUEST",
        "occurred_at": 1_700_000_000_000,
        "source": "pim",
        "product": {
            "sku": "SKU-123",
            "title": "Stainless steel kettle",
            "brand": "Acme",
            "category": "kitchen",
            "attributes": {"colour": "steel"},
        },
        "references": [
            {"url": "https://cdn.example.com/p/123.png", "role": "PRODUCT", "required": True},
            {"url": "https://cdn.example.com/m/1.jpg", "role": "MOODBOARD", "required": False},
        ],
        "request": {
            "asset_types": ["hero", "lifestyle"],
            "channels": ["web", "app"],
            "locales": ["en-US", "de-DE", "fr-FR"],
            "template_id": "studio-hero",
            "width": 1024,
            "height": 768,
            **request,
        },
    }


def jobs_of(event: dict[str, Any], accepted_at: int = ACCEPTED_AT) -> list[dict[str, Any]]:
    return fan_out(event, accepted_at, latest_version)


def test_one_job_per_combination_in_order() -> None:
    jobs = jobs_of(make_event())
    assert len(jobs) == 2 * 2 * 3
    combos = [(j["spec"]["asset_type"], j["spec"]["channel"], j["spec"]["locale"]) for j in jobs]
    assert combos[:4] == [
        ("hero", "web", "en-US"),
        ("hero", "web", "de-DE"),
        ("hero", "web", "fr-FR"),
        ("hero", "app", "en-US"),
    ]
    assert len(set(combos)) == 12
    assert len({j["job_id"] for j in jobs}) == 12


def test_jobs_match_the_job_schema() -> None:
    serde = AvroSerde("job")
    for job in jobs_of(make_event(text_overlay="Sale", risk="CRITICAL", variants=3)):
        serde.validate(job)
        decoded = serde.decode(serde.encode(job))
        assert decoded["job_id"] == job["job_id"]
        assert decoded["spec"] == job["spec"]
        assert set(decoded) == set(job)


def test_job_fields() -> None:
    event = make_event(
        text_overlay="Winter sale", risk="EXPLORATORY", confidential=True, priority=5, variants=2
    )
    event["campaign"] = "winter-24"
    job = jobs_of(event)[0]
    assert job["event_id"] == "evt-1" and job["submitted_at"] == ACCEPTED_AT
    assert job["product"] == event["product"]
    assert job["spec"] == {
        "asset_type": "hero",
        "channel": "web",
        "locale": "en-US",
        "template_id": "studio-hero",
        "template_version": "1.1.0",
        "width": 1024,
        "height": 768,
        "text_overlay": "Winter sale",
        "risk": "EXPLORATORY",
        "confidential": True,
        "priority": 5,
        "variants": 2,
        "campaign": "winter-24",
    }
    assert job["source_references"] == event["references"]
    assert job["references"] == [] and job["dropped_references"] == []
    assert job["prompt"] is None and job["route"] is None and job["generation"] is None
    assert job["attempt"] == 0 and job["replay_of"] is None


def test_schema_defaults_fill_a_json_event() -> None:
    event = make_event()
    del event["request"]["width"], event["request"]["height"]
    del event["references"][1]["required"]
    spec = jobs_of(event)[0]["spec"]
    assert (spec["width"], spec["height"], spec["risk"], spec["variants"]) == (512, 512, "STANDARD", 1)
    assert spec["text_overlay"] is None and spec["campaign"] is None
    assert jobs_of(event)[0]["source_references"][1]["required"] is False


def test_same_event_gives_same_job_ids() -> None:
    first = [j["job_id"] for j in jobs_of(make_event())]
    again = [j["job_id"] for j in jobs_of(make_event(), accepted_at=ACCEPTED_AT + 60_000)]
    assert first == again


def test_a_resubmitted_request_maps_to_the_same_jobs() -> None:
    # A new event id (the client retried through the gateway) still names the same assets, and
    # with the same product at the same time the same versions of them.
    resubmitted = make_event()
    resubmitted["event_id"] = "evt-2"
    resubmitted["request"]["locales"] = ["fr-FR", "en-US", "de-DE"]  # other order
    first = {j["idempotency_key"]: j["job_id"] for j in jobs_of(make_event())}
    second = {j["idempotency_key"]: j["job_id"] for j in jobs_of(resubmitted)}
    assert first == second


@pytest.mark.parametrize(
    "change",
    [
        {"width": 512},
        {"template_id": "lifestyle-kitchen"},
        {"template_version": "1.0.0"},
        {"text_overlay": "Summer sale"},
    ],
)
def test_a_different_asset_gets_different_ids(change: dict[str, Any]) -> None:
    base = {j["job_id"] for j in jobs_of(make_event())}
    changed = {j["job_id"] for j in jobs_of(make_event(**change))}
    assert base.isdisjoint(changed)


def test_the_pinned_template_version_is_passed_and_recorded() -> None:
    seen: list[tuple[str, str | None]] = []

    def resolve(template_id: str, pinned: str | None) -> str:
        seen.append((template_id, pinned))
        return "1.0.0"

    jobs = fan_out(make_event(template_version="1.0.0"), ACCEPTED_AT, resolve)
    assert seen == [("studio-hero", "1.0.0")]
    assert {j["spec"]["template_version"] for j in jobs} == {"1.0.0"}
    assert all(j["idempotency_key"].endswith("|studio-hero|1.0.0") for j in jobs)


def test_repeated_values_are_collapsed() -> None:
    jobs = jobs_of(make_event(asset_types=["hero", "hero"], channels=["web"], locales=["en-US", "en-US"]))
    assert len(jobs) == 1


def test_jobs_do_not_share_mutable_state() -> None:
    first, second = jobs_of(make_event())[:2]
    first["product"]["attributes"]["colour"] = "red"
    first["source_references"].append({"url": "x", "role": "PRODUCT", "required": True})
    first["references"].append({})
    assert second["product"]["attributes"] == {"colour": "steel"}
    assert len(second["source_references"]) == 2 and second["references"] == []


def test_idempotency_key_format_and_job_id() -> None:
    key = idempotency_key("SKU-1", "hero", 512, 768, "web", "en-US", "studio-hero", "1.0.0")
    assert key == "SKU-1|hero|512x768|web|en-US|studio-hero|1.0.0"
    assert job_id_for(key) == str(uuid.uuid5(JOB_NAMESPACE, key))
    assert uuid.UUID(job_id_for(key)).version == 5


def test_idempotency_key_is_injective_over_separators() -> None:
    a = idempotency_key("A|hero", "x", 8, 8, "web", "en-US", "t", "1.0.0")
    b = idempotency_key("A", "hero|x", 8, 8, "web", "en-US", "t", "1.0.0")
    assert a != b and job_id_for(a) != job_id_for(b)


def test_text_overlay_joins_the_key_only_when_present() -> None:
    args = ("SKU-1", "banner", 512, 512, "web", "en-US", "typography-banner", "1.0.0")
    plain = idempotency_key(*args)
    assert idempotency_key(*args, text_overlay=None) == plain
    assert idempotency_key(*args, text_overlay="  ") == plain
    sale = idempotency_key(*args, text_overlay="Sale")
    assert sale.startswith(plain + "|text:") and sale != idempotency_key(*args, text_overlay="Sale!")


def test_a_job_names_its_version_and_leaves_lineage_to_intake() -> None:
    event = make_event()
    job = jobs_of(event)[0]
    assert job["asset_version"] == event["occurred_at"]
    assert job["supersedes"] is None
    assert len(job["product_sha256"]) == 64


@pytest.mark.parametrize(
    "change",
    [
        lambda e: e["product"].update(title="Copper kettle"),
        lambda e: e["product"]["attributes"].update(colour="copper"),
        lambda e: e["references"][0].update(url="https://cdn.example.com/p/123-v2.png"),
        lambda e: e.update(occurred_at=e["occurred_at"] + 1),
    ],
)
def test_each_version_of_a_slot_gets_its_own_job_id(change: Any) -> None:
    base = {j["idempotency_key"]: j["job_id"] for j in jobs_of(make_event())}
    event = make_event()
    change(event)
    changed = {j["idempotency_key"]: j["job_id"] for j in jobs_of(event)}
    assert set(changed) == set(base), "the same slots"
    assert set(changed.values()).isdisjoint(base.values())


def test_the_product_digest_is_of_the_product_only() -> None:
    from processors.intake.content import event_digest, product_digest

    event = make_event()
    other = make_event(priority=9)
    other["event_id"], other["occurred_at"], other["source"] = "evt-9", 1, "erp"
    assert product_digest(other) == product_digest(event)
    assert event_digest(other) != event_digest(event)
    # A JSON event that leaves a default out and its filled-in form are the same event.
    explicit = make_event()
    explicit["references"][0]["required"] = True
    implicit = make_event()
    del implicit["references"][1]["required"]
    explicit["references"][1]["required"] = False
    assert event_digest(implicit) == event_digest(explicit)
