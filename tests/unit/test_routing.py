"""Routing rules: first match wins, decisions fit the job schema, canaries, hot reload."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from processors.intake import fan_out
from processors.routing import (
    COMPOSITOR,
    DEFAULT_RULES_PATH,
    Router,
    RoutingError,
    in_canary,
    load_rules,
    parse_rules,
)
from schemas.serde import AvroSerde

ROUTER = Router.from_file()
ROUTE_FIELDS = {"rule_id", "rules_version", "backend", "model", "pool", "fallbacks", "params", "canary"}


def job(job_id: str = "job-1", **spec: Any) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "spec": {
            "asset_type": "hero",
            "text_overlay": None,
            "risk": "STANDARD",
            "confidential": False,
            "priority": 0,
            **spec,
        },
    }


def non_canary_id(rule_id: str, share: float) -> str:
    return next(f"job-{i}" for i in range(1000) if not in_canary(rule_id, f"job-{i}", share))


def simple_rules(**extra_rule: Any) -> dict[str, Any]:
    rules: list[dict[str, Any]] = []
    if extra_rule:
        rules.append(extra_rule)
    rules.append(
        {
            "id": "default",
            "match": {},
            "decision": {
                "backend": "compositor",
                "model": "compositor",
                "pool": "cpu",
                "fallbacks": ["compositor:compositor"],
            },
        }
    )
    return {"version": "t1", "rules": rules}


def rule(rule_id: str = "r", **decision: Any) -> dict[str, Any]:
    base = {"backend": "diffusers", "model": "m", "pool": "gpu", "fallbacks": ["compositor:compositor"]}
    return {"id": rule_id, "match": {"needs_text": True}, "decision": {**base, **decision}}


@pytest.mark.parametrize(
    ("spec", "rule_id", "backend", "model", "pool"),
    [
        (
            {"text_overlay": "Sale", "confidential": True},
            "confidential-typography",
            "diffusers",
            "sdxl-text",
            "private",
        ),
        ({"confidential": True, "risk": "CRITICAL"}, "confidential", "diffusers", "sdxl-base", "private"),
        ({"text_overlay": "Winter sale"}, "typography", "diffusers", "sdxl-text", "gpu"),
        ({"risk": "CRITICAL"}, "critical", "diffusers", "sd-inpaint", "gpu"),
        ({"risk": "EXPLORATORY"}, "exploratory", "diffusers", "sd-turbo", "gpu"),
        ({}, "default", "compositor", "compositor", "cpu"),
        ({"text_overlay": "   "}, "default", "compositor", "compositor", "cpu"),
    ],
)
def test_each_rule_kind(spec: dict[str, Any], rule_id: str, backend: str, model: str, pool: str) -> None:
    job_id = non_canary_id("exploratory", 0.1)
    decision = ROUTER.route(job(job_id, **spec))
    assert set(decision) == ROUTE_FIELDS
    assert (decision["rule_id"], decision["backend"], decision["model"], decision["pool"]) == (
        rule_id,
        backend,
        model,
        pool,
    )
    assert decision["rules_version"] == ROUTER.version
    assert decision["canary"] is False
    assert decision["fallbacks"][-1] == f"{COMPOSITOR}:{COMPOSITOR}"
    assert all(isinstance(v, str) for v in decision["params"].values())
    assert {"steps", "guidance", "sampler"} <= set(decision["params"])


def test_every_shipped_rule_ends_with_the_compositor_and_the_default_is_it() -> None:
    rules = load_rules().rules
    assert all(r.fallbacks[-1] == "compositor:compositor" for r in rules)
    assert (rules[-1].id, rules[-1].backend, rules[-1].model) == ("default", "compositor", "compositor")


def test_a_decision_fits_the_job_schema() -> None:
    event = {
        "event_id": "e",
        "product": {"sku": "S", "title": "T", "brand": "B", "category": "C"},
        "references": [{"url": "https://x.example/p.png", "role": "PRODUCT", "required": True}],
        "request": {
            "asset_types": ["hero"],
            "channels": ["web"],
            "locales": ["en-US"],
            "template_id": "studio-hero",
            "text_overlay": "Sale",
            "risk": "CRITICAL",
        },
    }
    record = fan_out(event, 0, lambda template_id, pinned: "1.0.0")[0]
    record["route"] = ROUTER.route(record)
    AvroSerde("job").validate(record)
    assert record["route"]["rule_id"] == "typography"  # text outranks risk in the shipped order


def test_first_match_wins_and_decisions_are_copies() -> None:
    decision = ROUTER.route(job(text_overlay="x", risk="CRITICAL"))
    assert decision["rule_id"] == "typography"
    decision["fallbacks"].clear()
    decision["params"]["steps"] = "0"
    again = ROUTER.route(job(text_overlay="x", risk="CRITICAL"))
    assert again["fallbacks"] and again["params"]["steps"] == "30"


def test_asset_type_and_min_priority_conditions() -> None:
    data = simple_rules(
        id="urgent-banners",
        match={"asset_type": ["banner"], "min_priority": 10},
        decision={
            "backend": "diffusers",
            "model": "fast",
            "pool": "gpu",
            "fallbacks": ["compositor:compositor"],
            "params": {"steps": 4, "guidance": 1.5, "tiled": True},
        },
    )
    router = Router(parse_rules(data))
    hit = router.route(job(asset_type="banner", priority=10))
    assert hit["rule_id"] == "urgent-banners"
    assert hit["params"] == {"steps": "4", "guidance": "1.5", "tiled": "true"}
    assert router.route(job(asset_type="banner", priority=9))["rule_id"] == "default"
    assert router.route(job(asset_type="hero", priority=99))["rule_id"] == "default"


def test_canary_share_is_close_to_configured_and_deterministic() -> None:
    ids = [f"job-{i:04d}" for i in range(1000)]
    decisions = [ROUTER.route(job(i, risk="EXPLORATORY")) for i in ids]
    canaries = [d for d in decisions if d["canary"]]
    # share 0.1 over 1000 ids: binomial sd ~9.5, so 100 +/- 40 is over 4 sd.
    assert 60 <= len(canaries) <= 140
    assert all(d["model"] == "sd-turbo-next" for d in canaries)
    assert all(d["fallbacks"] == ["diffusers:sd-turbo", "compositor:compositor"] for d in canaries)
    assert [d["canary"] for d in decisions] == [
        ROUTER.route(job(i, risk="EXPLORATORY"))["canary"] for i in ids
    ]


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_canary_share_bounds(share: float) -> None:
    data = simple_rules(**rule(), canary={"model": "next", "share": share})
    router = Router(parse_rules(data))
    hits = sum(router.route(job(f"j{i}", text_overlay="x"))["canary"] for i in range(1000))
    assert abs(hits / 1000 - share) < 0.06


@pytest.mark.parametrize(
    ("data", "rule_id", "field"),
    [
        (simple_rules(**rule(fallbacks=["diffusers:other"])), "r", "decision.fallbacks"),
        (simple_rules(**rule(fallbacks=[])), "r", "decision.fallbacks"),
        (simple_rules(**rule(fallbacks=["nomodel"])), "r", "decision.fallbacks[0]"),
        (simple_rules(**rule(model="")), "r", "decision.model"),
        (simple_rules(**{**rule(), "match": {"confidental": True}}), "r", "match.confidental"),
        (simple_rules(**{**rule(), "match": {"risk": ["HIGH"]}}), "r", "match.risk"),
        (simple_rules(**{**rule(), "match": {"needs_text": "yes"}}), "r", "match.needs_text"),
        (simple_rules(**{**rule(), "match": {"min_priority": "5"}}), "r", "match.min_priority"),
        (simple_rules(**rule(params={"steps": [1, 2]})), "r", "decision.params.steps"),
        (simple_rules(**rule(), canary={"model": "x", "share": 1.5}), "r", "canary.share"),
        (simple_rules(**rule(), canary={"share": 0.1}), "r", "canary.model"),
        (simple_rules(**{**rule(), "match": {}}), "r", "match"),
        (simple_rules(**rule("default")), "default", "id"),
        (simple_rules(**{**rule(), "priority": 1}), "r", "priority"),
    ],
)
def test_invalid_rules_name_the_rule_and_field(data: dict[str, Any], rule_id: str, field: str) -> None:
    with pytest.raises(RoutingError) as err:
        parse_rules(data, source="rules.yaml")
    assert (err.value.rule_id, err.value.field) == (rule_id, field)
    assert f"rule {rule_id!r}" in str(err.value) and field in str(err.value)


def test_the_last_rule_must_be_a_catch_all() -> None:
    data = simple_rules(**rule())
    data["rules"].reverse()
    with pytest.raises(RoutingError, match="rule 'r': match: the last rule must be the default"):
        parse_rules(data)


@pytest.mark.parametrize("version", [None, 1.1, "", True])
def test_the_file_needs_a_string_version(version: Any) -> None:
    data = simple_rules()
    data["version"] = version
    with pytest.raises(RoutingError, match="version"):
        parse_rules(data)


def _write(path: Path, data: Any, bump_ns: int) -> None:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    # Make the change visible even on filesystems with coarse timestamps.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + bump_ns))


def test_hot_reload_picks_up_a_change_and_survives_an_invalid_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    shutil.copy(DEFAULT_RULES_PATH, path)
    router = Router.from_file(path)
    assert router.maybe_reload() is None  # unchanged: nothing to do
    assert router.route(job())["model"] == "compositor"

    data = yaml.safe_load(DEFAULT_RULES_PATH.read_text())
    data["version"] = "v2"
    data["rules"][-1]["decision"]["pool"] = "cpu-large"
    _write(path, data, 1_000_000_000)
    assert router.maybe_reload() is None
    decision = router.route(job())
    assert (decision["rules_version"], decision["pool"]) == ("v2", "cpu-large")

    broken = yaml.safe_load(path.read_text())
    broken["version"] = "v3"
    broken["rules"][0]["decision"]["fallbacks"] = ["diffusers:sdxl-base"]
    _write(path, broken, 2_000_000_000)
    error = router.maybe_reload()
    assert isinstance(error, RoutingError) and error.rule_id == "confidential-typography"
    assert router.last_error is error
    assert router.route(job())["rules_version"] == "v2"  # the old rules stay in force
    assert router.maybe_reload() is None  # reported once, not every batch

    _write(path, "rules: [unclosed", 3_000_000_000)
    assert isinstance(router.maybe_reload(), RoutingError)
    path.unlink()
    assert isinstance(router.maybe_reload(), RoutingError)
    assert router.route(job())["rules_version"] == "v2"

    data["version"] = "v4"
    _write(path, data, 4_000_000_000)
    assert router.maybe_reload() is None and router.last_error is None
    assert router.route(job())["rules_version"] == "v4"


def test_from_file_refuses_an_invalid_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("version: '1'\nrules: []\n")
    with pytest.raises(RoutingError, match="non-empty list"):
        Router.from_file(path)


def test_the_template_scene_reaches_the_params() -> None:
    with_prompt = {**job(), "prompt": {"variables": {"scene": "kitchen"}}}
    assert ROUTER.route(with_prompt)["params"]["scene"] == "kitchen"
    assert "scene" not in ROUTER.route(job())["params"]
    data = simple_rules(**rule(params={"scene": "holiday"}))
    pinned = {**job(text_overlay="x"), "prompt": {"variables": {"scene": "kitchen"}}}
    assert Router(parse_rules(data)).route(pinned)["params"]["scene"] == "holiday"
