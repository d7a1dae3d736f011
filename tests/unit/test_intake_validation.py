"""Intake validation: every way an event can be wrong yields a coded, located rejection."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest

from processors.intake import (
    IntakePolicy,
    PolicyError,
    Rejection,
    fan_out,
    reasons_as_text,
    validate_event,
    with_defaults,
)
from processors.prompting import TemplateStore
from schemas.serde import AvroSerde

POLICY = IntakePolicy.load()
# The shipped catalogue, as the stage uses it: studio-hero has 1.0.0 and 1.1.0.
TEMPLATES = TemplateStore()


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
            "attributes": {"colour": "steel", "capacity": "1.7 l"},
        },
        "references": [
            {"url": "https://cdn.example.com/p/123.png", "role": "PRODUCT", "required": True},
            {"url": "https://cdn.example.com/m/1.jpg", "role": "MOODBOARD", "required": False},
        ],
        "request": {
            "asset_types": ["hero"],
            "channels": ["web", "app"],
            "locales": ["en-US", "de-DE"],
            "template_id": "studio-hero",
            "width": 512,
            "height": 512,
            "text_overlay": None,
            "risk": "STANDARD",
            "confidential": False,
            "priority": 0,
            "variants": 1,
            "template_version": None,
            **request,
        },
        "campaign": None,
    }


def check(event: dict[str, Any]) -> list[Rejection]:
    return validate_event(event, POLICY, TEMPLATES)


def reasons(event: dict[str, Any]) -> set[tuple[str, str]]:
    return {(r.reason, r.field) for r in check(event)}


def test_valid_event_is_accepted() -> None:
    assert check(make_event()) == []


def test_json_event_may_omit_fields_with_schema_defaults() -> None:
    event = make_event()
    for key in (
        "width",
        "height",
        "text_overlay",
        "risk",
        "confidential",
        "priority",
        "variants",
        "template_version",
    ):
        del event["request"][key]
    del event["product"]["attributes"]
    del event["references"][0]["required"]
    event["references"][0]["required"] = True  # the product reference must still say so
    del event["campaign"]
    assert check(event) == []
    filled = with_defaults(event)
    assert filled["request"]["width"] == 512 and filled["request"]["risk"] == "STANDARD"
    assert filled["product"]["attributes"] == {} and filled["campaign"] is None


def test_avro_decoded_event_is_accepted() -> None:
    # fastavro decodes timestamp-millis to a datetime; validation must take it.
    serde = AvroSerde("catalog_event")
    decoded = serde.decode(serde.encode(make_event()))
    assert check(decoded) == []


@pytest.mark.parametrize(
    ("path", "field"),
    [
        (("event_id",), "event_id"),
        (("event_type",), "event_type"),
        (("occurred_at",), "occurred_at"),
        (("product",), "product"),
        (("product", "sku"), "product.sku"),
        (("product", "title"), "product.title"),
        (("references",), "references"),
        (("references", 0, "url"), "references[0].url"),
        (("request",), "request"),
        (("request", "template_id"), "request.template_id"),
        (("request", "asset_types"), "request.asset_types"),
        (("request", "locales"), "request.locales"),
    ],
)
def test_missing_required_field(path: tuple[Any, ...], field: str) -> None:
    event = make_event()
    parent = event
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    assert ("missing_field", field) in reasons(event)


def test_empty_required_values_are_missing() -> None:
    event = make_event(channels=[])
    event["product"]["title"] = "   "
    assert {("missing_field", "product.title"), ("missing_field", "request.channels")} <= reasons(event)


@pytest.mark.parametrize(
    ("section", "key", "value", "field"),
    [
        ("request", "width", "512", "request.width"),
        ("request", "width", 512.0, "request.width"),
        ("request", "priority", True, "request.priority"),
        ("request", "confidential", "yes", "request.confidential"),
        ("request", "channels", "web", "request.channels"),
        ("request", "text_overlay", 42, "request.text_overlay"),
        ("product", "attributes", [["colour", "red"]], "product.attributes"),
        ("product", "title", ["kettle"], "product.title"),
        (None, "occurred_at", "2024-01-01", "occurred_at"),
        (None, "product", "SKU-1", "product"),
    ],
)
def test_invalid_types(section: str | None, key: str, value: Any, field: str) -> None:
    event = make_event()
    (event[section] if section else event)[key] = value
    assert ("invalid_type", field) in reasons(event)


def test_event_that_is_not_a_record() -> None:
    assert [r.reason for r in validate_event(["x"], POLICY, TEMPLATES)] == ["invalid_type"]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda e: e.update(event_type="PRODUCT_DELETE"), "event_type"),
        (lambda e: e["references"][1].update(role="LOGO"), "references[1].role"),
        (lambda e: e["request"].update(risk="HIGH"), "request.risk"),
        (lambda e: e["request"].update(channels=["web", "fax"]), "request.channels[1]"),
        (lambda e: e["request"].update(asset_types=["poster"]), "request.asset_types[0]"),
        (lambda e: e["request"].update(locales=["english"]), "request.locales[0]"),
        (lambda e: e["request"].update(locales=["en-us"]), "request.locales[0]"),
    ],
)
def test_unknown_enum_values(mutate: Any, field: str) -> None:
    event = make_event()
    mutate(event)
    assert ("invalid_enum", field) in reasons(event)


@pytest.mark.parametrize(
    "title",
    [
        "kettle\x00",  # NUL
        "kettle\x1b[31m red",  # ANSI escape
        "kettle\r",  # CR: only \t and \n are allowed
        "kettle\x7f",  # DEL
        "kettle\x85",  # C1 (NEL)
        json.loads('"kettle \\ud800"'),  # lone surrogate, as JSON can carry
        json.loads('"kettle \\udfff tea"'),
    ],
)
def test_titles_with_control_characters_or_surrogates_are_rejected(title: str) -> None:
    event = make_event()
    event["product"]["title"] = title
    found = [r for r in check(event) if r.field == "product.title"]
    assert [r.reason for r in found] == ["invalid_text"]
    assert "U+" in found[0].detail


def test_titles_as_invalid_utf8_bytes_are_rejected() -> None:
    event = make_event()
    event["product"]["title"] = b"kettle \xff\xfe"
    assert ("invalid_text", "product.title") in reasons(event)
    event["product"]["title"] = b"kettle"
    assert ("invalid_type", "product.title") in reasons(event)


def test_tabs_newlines_and_unicode_letters_are_fine() -> None:
    event = make_event()
    event["product"]["title"] = "Wasserkocher\tEdelstahl\n1,7 l – 北京 🫖"
    assert check(event) == []


def test_control_characters_elsewhere_are_rejected_too() -> None:
    event = make_event(text_overlay="Sale\x07")
    event["product"]["attributes"] = {"colour\x00": "red", "size": "L\x1b"}
    found = reasons(event)
    assert ("invalid_text", "request.text_overlay") in found
    assert ("invalid_text", "product.attributes['colour\\x00'].key") in found
    assert ("invalid_text", "product.attributes['size']") in found


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda e: e["product"].update(title="x" * 301), "product.title"),
        (lambda e: e["product"].update(sku="S" * 129), "product.sku"),
        (lambda e: e["product"].update(attributes={"k" * 129: "v"}), "product.attributes"),
        (lambda e: e["product"].update(attributes={"k": "v" * 1025}), "product.attributes['k']"),
        (lambda e: e["request"].update(text_overlay="y" * 201), "request.text_overlay"),
    ],
)
def test_too_long(mutate: Any, field: str) -> None:
    event = make_event()
    mutate(event)
    assert any(r.reason == "too_long" and r.field.startswith(field) for r in check(event))


def test_length_limits_are_inclusive() -> None:
    event = make_event()
    event["product"].update(title="x" * 300, sku="S" * 128, attributes={"k" * 128: "v" * 1024})
    assert check(event) == []


class _Unscannable(dict):  # type: ignore[type-arg]
    """A map that fails the test if anything iterates it."""

    def _fail(self, *args: Any) -> Any:
        raise AssertionError("an oversized attributes map was scanned")

    __iter__ = items = keys = values = _fail  # type: ignore[assignment]


def test_huge_attributes_map_is_rejected_fast_without_scanning() -> None:
    attrs = _Unscannable({f"k{i}": "miracle cure" for i in range(100_000)})
    event = make_event()
    event["product"]["attributes"] = attrs
    started = time.perf_counter()
    found = check(event)
    elapsed = time.perf_counter() - started
    assert [(r.reason, r.field) for r in found] == [("too_many_attributes", "product.attributes")]
    assert "100000" in found[0].detail
    assert elapsed < 0.05


def test_attribute_limit_is_inclusive() -> None:
    event = make_event()
    event["product"]["attributes"] = {f"k{i}": "v" for i in range(POLICY.max_attributes)}
    assert check(event) == []
    event["product"]["attributes"]["one-more"] = "v"
    assert ("too_many_attributes", "product.attributes") in reasons(event)


@pytest.mark.parametrize(
    "references",
    [
        [],
        [{"url": "https://x.example/p.png", "role": "PRODUCT", "required": False}],
        [{"url": "https://x.example/p.png", "role": "PRODUCT"}],
        [{"url": "https://x.example/m.png", "role": "MOODBOARD", "required": True}],
    ],
)
def test_a_required_product_reference_is_needed(references: list[dict[str, Any]]) -> None:
    event = make_event()
    event["references"] = references
    assert ("no_product_reference", "references") in reasons(event)


@pytest.mark.parametrize(
    "url", ["ftp://x.example/p.png", "file:///etc/passwd", "/relative/p.png", "https://"]
)
def test_reference_urls_must_be_absolute_http(url: str) -> None:
    event = make_event()
    event["references"][0]["url"] = url
    assert ("invalid_url", "references[0].url") in reasons(event)


def test_too_many_references() -> None:
    event = make_event()
    event["references"] = event["references"] * 11
    assert ("too_many_references", "references") in reasons(event)


def test_unknown_template_and_version() -> None:
    unknown = check(make_event(template_id="no-such-template"))
    assert [(r.reason, r.field) for r in unknown] == [("unknown_template", "request.template_id")]
    assert "studio-hero" in unknown[0].detail  # names the templates that exist
    (pinned,) = check(make_event(template_version="9.9.9"))
    assert (pinned.reason, pinned.field) == ("unknown_template_version", "request.template_version")
    assert "9.9.9" in pinned.detail and "1.0.0, 1.1.0" in pinned.detail
    # The catalogue is the only authority: a malformed name or version is simply not in it.
    assert ("unknown_template_version", "request.template_version") in reasons(
        make_event(template_version="latest")
    )
    assert ("unknown_template", "request.template_id") in reasons(make_event(template_id="../etc"))
    # No version can be checked on a template that does not exist: one rejection, not two.
    assert reasons(make_event(template_id="nope", template_version="9.9.9")) == {
        ("unknown_template", "request.template_id")
    }
    assert check(make_event(template_version="1.0.0")) == []
    assert check(make_event(template_version="")) == []  # blank: not pinned


@pytest.mark.parametrize(
    ("width", "ok"),
    [
        (64, True),
        (2048, True),
        (512, True),
        (56, False),
        (2056, False),
        (500, False),
        (0, False),
        (-512, False),
    ],
)
def test_sizes(width: int, ok: bool) -> None:
    found = reasons(make_event(width=width, height=768))
    assert (("invalid_size", "request.width") not in found) == ok


def test_fan_out_size_is_capped() -> None:
    event = make_event(
        asset_types=["hero", "lifestyle", "banner", "thumbnail", "detail", "social"],
        channels=["web", "app", "email", "social", "marketplace", "print"],
        locales=["en-US", "de-DE"],
    )  # 6 x 6 x 2 = 72 > 64
    found = check(event)
    assert [(r.reason, r.field) for r in found] == [("too_many_jobs", "request")]
    assert "72" in found[0].detail


def test_duplicate_values_do_not_count_twice() -> None:
    event = make_event(asset_types=["hero"] * 10, channels=["web"] * 10, locales=["en-US"] * 10)
    assert check(event) == []


def test_a_list_longer_than_the_job_cap_is_not_scanned() -> None:
    event = make_event(locales=["xx"] * 10_000)
    found = reasons(event)
    assert ("too_many_jobs", "request.locales") in found
    assert not any(reason == "invalid_enum" for reason, _ in found)


@pytest.mark.parametrize(
    ("where", "text"),
    [
        ("product.title", "MIRACLE CURE kettle"),
        ("product.title", "Kettle (miracle\n  cure)"),
        ("product.title", "risk-free returns"),
        ("request.text_overlay", "Clinically proven!"),
        ("product.attributes['claim']", "FDA Approved"),
    ],
)
def test_restricted_terms_match_case_insensitively(where: str, text: str) -> None:
    event = make_event()
    if where == "product.title":
        event["product"]["title"] = text
    elif where == "request.text_overlay":
        event["request"]["text_overlay"] = text
    else:
        event["product"]["attributes"]["claim"] = text
    found = [r for r in check(event) if r.reason == "restricted_term"]
    assert [r.field for r in found] == [where]


@pytest.mark.parametrize("title", ["secures the lid", "Manicures kit", "miraclecure", "Replicate"])
def test_restricted_terms_match_whole_words_only(title: str) -> None:
    event = make_event()
    event["product"]["title"] = title
    assert check(event) == []


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda e: e["product"]["attributes"].update(use="Medical claims"), "product.attributes['use']"),
        (
            lambda e: e["product"]["attributes"].update(intended_use="cooking, weapons"),
            "product.attributes['intended_use']",
        ),
        (lambda e: e["product"]["attributes"].update(weapons="true"), "product.attributes['weapons']"),
        (lambda e: e["product"].update(category="Firearms"), "product.category"),
        (lambda e: e["request"].update(asset_types=["hero", "video"]), "request.asset_types[1]"),
    ],
)
def test_unsupported_uses(mutate: Any, field: str) -> None:
    event = make_event()
    mutate(event)
    assert ("unsupported_use", field) in reasons(event)


def test_a_use_flag_set_to_no_is_fine() -> None:
    event = make_event()
    event["product"]["attributes"].update(weapons="no", use="cooking")
    assert check(event) == []


def test_out_of_range_numbers() -> None:
    found = reasons(make_event(variants=0, priority=1000))
    assert {("invalid_value", "request.variants"), ("invalid_value", "request.priority")} <= found


def test_bad_sku_alphabet() -> None:
    event = make_event()
    event["product"]["sku"] = "SKU|123/../x"
    assert ("invalid_value", "product.sku") in reasons(event)


def test_every_problem_is_reported_not_just_the_first() -> None:
    event = make_event(width=7, risk="HIGH", template_id="nope")
    event["product"]["title"] = "bad\x00"
    del event["event_id"]
    assert {r for r, _ in reasons(event)} >= {
        "invalid_size",
        "invalid_enum",
        "unknown_template",
        "invalid_text",
        "missing_field",
    }


def test_validation_does_not_mutate_the_event() -> None:
    event = make_event()
    before = copy.deepcopy(event)
    check(event)
    with_defaults(event)
    assert event == before


def test_reasons_as_text() -> None:
    text = reasons_as_text(
        [
            Rejection("missing_field", "product.title", "required"),
            Rejection("invalid_type", "", "expected a record, got list"),
        ]
    )
    assert text == (
        "missing_field at product.title: required; invalid_type at event: expected a record, got list"
    )


def test_policy_loads_from_a_path_and_refuses_unknown_keys(tmp_path: Path) -> None:
    file = tmp_path / "policy.yaml"
    file.write_text("limits: {max_jobs_per_event: 2}\nchannels: [web]\nasset_types: [hero]\n")
    policy = IntakePolicy.load(file)
    assert policy.max_jobs_per_event == 2 and policy.channels == ("web",)
    # What the site's file leaves out is the shipped policy's, never a silent empty list.
    assert policy.restricted_terms == POLICY.restricted_terms and policy.max_size == POLICY.max_size
    with pytest.raises(PolicyError, match="missing policy keys"):
        IntakePolicy.from_dict({"limits": {"max_jobs_per_event": 2}})
    event = make_event(channels=["web"], locales=["en-US", "de-DE", "fr-FR"])
    assert [r.reason for r in validate_event(event, policy, TEMPLATES)] == ["too_many_jobs"]
    file.write_text("limits: {max_jobs: 2}\n")
    with pytest.raises(PolicyError, match="max_jobs"):
        IntakePolicy.load(file)
    file.write_text("restricted_terms: cure\n")
    with pytest.raises(PolicyError, match="restricted_terms"):
        IntakePolicy.load(file)


# -- a request's own webhook -------------------------------------------------------------------

HOOKS = ["hooks.example.com", "127.0.0.1:8099"]


def _with_hook(url: Any) -> list[Rejection]:
    return validate_event({**make_event(), "webhook_url": url}, POLICY, TEMPLATES, HOOKS)


def test_a_webhook_on_an_allowed_host_is_accepted_and_carried_into_every_job() -> None:
    assert _with_hook("https://hooks.example.com/lightbox?team=7") == []
    assert _with_hook("http://127.0.0.1:8099/hook") == []
    assert _with_hook(None) == []
    jobs = fan_out({**make_event(), "webhook_url": "https://hooks.example.com/x"}, 1, lambda *_: "1.0.0")
    assert {(job["source"], job["webhook_url"]) for job in jobs} == {("pim", "https://hooks.example.com/x")}


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://internal.corp/admin", "webhook_not_allowed"),
        ("http://127.0.0.1:9000/minio", "webhook_not_allowed"),  # the allowed host, another port
        ("http://169.254.169.254/latest/meta-data", "webhook_not_allowed"),
        ("ftp://hooks.example.com/x", "invalid_url"),
        ("http://hooks.example.com:99999/x", "invalid_url"),
        ("http://hooks.example.com:abc/x", "invalid_url"),
        ("http://[::1/x", "invalid_url"),
        ("https://user:pw@hooks.example.com/x", "invalid_url"),
        ("https://hooks.example.com/" + "x" * 2000, "too_long"),
        (7, "invalid_type"),
    ],
)
def test_a_webhook_anywhere_else_is_refused_naming_the_field(url: Any, reason: str) -> None:
    assert {(r.reason, r.field) for r in _with_hook(url)} == {(reason, "webhook_url")}


def test_with_no_allowed_hosts_no_request_may_name_a_webhook() -> None:
    (refusal,) = validate_event(
        {**make_event(), "webhook_url": "https://hooks.example.com/"}, POLICY, TEMPLATES
    )
    assert refusal.reason == "webhook_not_allowed" and "empty" in refusal.detail
