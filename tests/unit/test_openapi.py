"""The OpenAPI document: every API route of the app is in it with its roles and problem+json
errors, the catalog event's schema follows its Avro schema, and /docs renders it whole."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.web.app import API_ROUTES, PAGE_ROUTES, build_app
from gateway.web.openapi import avro_to_json_schema, document, render_docs
from gateway.web.responses import PROBLEM_JSON, PROBLEM_TYPES
from processors.config import Settings, load_settings
from schemas.registry import default_registry


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    base = load_settings()
    gateway = base.gateway.model_copy(
        update={"tokens_file": str(tmp_path / "t.json"), "session_key_file": str(tmp_path / "k")}
    )
    return base.model_copy(update={"gateway": gateway})


def _routes(tables: tuple[web.RouteTableDef, ...]) -> set[tuple[str, str]]:
    return {
        (route.method.lower(), route.path)
        for table in tables
        for route in table
        if isinstance(route, web.RouteDef) and route.method != "HEAD"
    }


def test_every_api_route_is_documented_and_nothing_else() -> None:
    documented = {(method, path) for path, ops in document()["paths"].items() for method in ops}
    assert _routes(API_ROUTES) == documented
    # The pages (for people in a browser, tested in tests/browser) stay out of the API's paths.
    assert not {path for _, path in _routes(PAGE_ROUTES)} & {path for _, path in documented}


def test_every_operation_declares_its_roles_and_problem_errors() -> None:
    doc = document()
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            where = f"{method.upper()} {path}"
            errors = {int(code): spec for code, spec in op["responses"].items() if int(code) >= 400}
            assert 403 in errors, where  # the Host and Origin defences answer every route
            for spec in errors.values():
                assert spec["content"] == {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
            if op["security"]:
                assert op["x-roles"] and 401 in errors, where
            if "requestBody" in op:
                assert {400, 413, 415} <= set(errors), where


def test_the_catalog_event_schema_follows_avro() -> None:
    schema = document()["components"]["schemas"]["CatalogEvent"]
    avro = default_registry().latest("catalog_event").parsed
    assert list(schema["properties"]) == [f["name"] for f in avro["fields"]]
    assert schema["required"] == [f["name"] for f in avro["fields"] if "default" not in f]
    request = schema["properties"]["request"]
    assert request["properties"]["risk"]["enum"] == ["STANDARD", "CRITICAL", "EXPLORATORY"]
    assert "width" not in request["required"], "a field with a default may be left out"
    assert schema["properties"]["campaign"] == {
        "anyOf": [{"type": "null"}, {"type": "string"}],
        "description": "v2: optional campaign tag carried into lineage.",
    }
    # A record used twice is described once and referenced by its name the second time.
    named: dict = {}
    inner = {"type": "record", "name": "Q", "fields": []}
    twice = {
        "type": "record",
        "name": "P",
        "fields": [{"name": "a", "type": inner}, {"name": "b", "type": "Q"}],
    }
    converted = avro_to_json_schema(twice, named)
    assert converted["properties"]["a"] is converted["properties"]["b"]


def test_docs_page_is_self_contained_and_lists_every_problem_type() -> None:
    page = render_docs(document())
    assert "<script" not in page and "http://" not in page.replace('href="/openapi.json"', "")
    for slug in PROBLEM_TYPES:
        assert f'id="problem-{slug}"' in page
    for path in document()["paths"]:
        assert f"<code>{path}</code>" in page


async def test_the_served_document_is_this_document(settings: Settings) -> None:
    async with TestClient(TestServer(build_app(settings))) as client:
        response = await client.get("/openapi.json")
        assert response.status == 200
        assert json.loads(await response.text()) == json.loads(json.dumps(document(), default=str))
        docs = await client.get("/docs")
        assert (
            docs.content_type == "text/html"
            and "frame-ancestors 'none'" in docs.headers["Content-Security-Policy"]
        )
