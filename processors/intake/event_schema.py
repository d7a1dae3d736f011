"""What the catalog_event Avro schema says an event holds: its enum symbols, and the defaults a
JSON event (gateway, CLI) may leave out, which Avro decoding would have filled in.

Read from the latest schema version, the single source of truth, so a symbol or default added
there reaches validation and fan-out without a second edit here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from schemas.registry import default_registry


def _named_types(schema: Any) -> Iterator[Mapping[str, Any]]:
    """Every record and enum declared anywhere in a parsed schema."""
    if isinstance(schema, list):
        for branch in schema:
            yield from _named_types(branch)
    elif isinstance(schema, Mapping):
        if schema.get("type") in ("record", "enum"):
            yield schema
        for key in ("fields", "items", "values"):
            yield from _named_types(schema.get(key))
        if "type" in schema and not isinstance(schema["type"], str):
            yield from _named_types(schema["type"])


def _by_short_name() -> dict[str, Mapping[str, Any]]:
    schema = default_registry().latest("catalog_event").parsed
    return {t["name"].rpartition(".")[2]: t for t in _named_types(schema)}


_TYPES = _by_short_name()

EVENT_TYPES: tuple[str, ...] = tuple(_TYPES["EventType"]["symbols"])
REFERENCE_ROLES: tuple[str, ...] = tuple(_TYPES["ReferenceRole"]["symbols"])
RISKS: tuple[str, ...] = tuple(_TYPES["Risk"]["symbols"])

# The defaults the schema applies to a request, by field; required fields have none.
REQUEST_DEFAULTS: Mapping[str, Any] = {
    f["name"]: f["default"] for f in _TYPES["AssetRequest"]["fields"] if "default" in f
}
REFERENCE_REQUIRED_DEFAULT: bool = next(
    f["default"] for f in _TYPES["SourceReference"]["fields"] if f["name"] == "required"
)


def text_or_none(value: str | None) -> str | None:
    """An optional text: a blank string means "not set", the same as null. Every stage that asks
    whether a job carries text (routing, prompt variables, the idempotency key) asks here."""
    return value if isinstance(value, str) and value.strip() else None


def with_defaults(event: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a validated event with the schema's defaults filled in (for JSON events)."""
    out = dict(event)
    product = dict(out["product"])
    product["attributes"] = dict(product.get("attributes") or {})
    out["product"] = product
    out["references"] = [
        {
            "url": r["url"],
            "role": r["role"],
            "required": bool(r.get("required", REFERENCE_REQUIRED_DEFAULT)),
        }
        for r in out.get("references") or []
    ]
    # A null or absent field takes the schema default; a blank optional string means "not set".
    request = dict(REQUEST_DEFAULTS)
    request.update({k: v for k, v in dict(out["request"]).items() if v is not None})
    for key in ("text_overlay", "template_version"):
        request[key] = text_or_none(request[key])
    out["request"] = request
    out["campaign"] = out.get("campaign") or None
    return out
