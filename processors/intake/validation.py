"""Intake validation: decide, without side effects, whether a catalog event may become jobs.

:func:`validate_event` walks the event section by section (envelope, product, references,
request) and answers every reason it cannot be accepted (see processors.intake.rejection for the
codes). The parts live beside it, one concern each: field checks (fields), the limits and lists
(policy, from policy.yaml), policy terms (policy_checks, terms), the template reference
(template_check, against the catalogue it is given) and the schema's enums (event_schema).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import urlsplit

from processors.intake import policy_checks
from processors.intake.event_schema import (
    EVENT_TYPES,
    REFERENCE_REQUIRED_DEFAULT,
    REFERENCE_ROLES,
    REQUEST_DEFAULTS,
    RISKS,
)
from processors.intake.fanout import distinct
from processors.intake.fields import MISSING, FieldChecker, attribute_path, short, type_name
from processors.intake.policy import IntakePolicy
from processors.intake.rejection import Rejection
from processors.intake.template_check import TemplateCatalogue, check_template_reference

# Browsers and proxies handle URLs of this length; a longer callback is no one's real endpoint.
MAX_WEBHOOK_URL_CHARS = 2000


def validate_event(
    event: Mapping[str, Any],
    policy: IntakePolicy,
    templates: TemplateCatalogue,
    webhook_hosts: Collection[str] = (),
) -> list[Rejection]:
    """Every reason the event cannot be accepted; an empty list means accept.

    templates is the catalogue the request's template_id and pinned template_version are looked
    up in (required: a request naming a template nobody has must be rejected here, not fail later).
    webhook_hosts: the hosts (host or host:port) a request's own webhook_url may name
    (webhooks.allowed_hosts).
    """
    if not isinstance(event, Mapping):
        return [Rejection("invalid_type", "", f"expected a record, got {type_name(event)}")]
    c = FieldChecker(policy)
    _check_envelope(c, event)
    _check_webhook_url(c, event, webhook_hosts)
    product = c.section(event, "product", "product")
    title = attrs = None
    if product is not None:
        title, attrs = _check_product(c, product)
    _check_references(c, event)
    request = c.section(event, "request", "request")
    overlay = None
    if request is not None:
        overlay = _check_request(c, request, templates)
    policy_checks.check_restricted(c, title, attrs, overlay)
    return c.out


def _check_envelope(c: FieldChecker, event: Mapping[str, Any]) -> None:
    p = c.policy
    c.text(event, "event_id", "event_id", p.max_text_chars)
    c.enum(event, "event_type", "event_type", EVENT_TYPES)
    occurred = event.get("occurred_at", MISSING)
    if occurred is MISSING or occurred is None:
        c.reject("missing_field", "occurred_at", "required")
    elif not isinstance(occurred, dt.datetime) and (
        isinstance(occurred, bool) or not isinstance(occurred, int)
    ):
        # fastavro decodes timestamp-millis to datetime; JSON carries epoch milliseconds.
        c.reject("invalid_type", "occurred_at", f"expected epoch milliseconds, got {type_name(occurred)}")
    c.text(event, "source", "source", p.max_text_chars, allow_empty=True)
    c.text(event, "campaign", "campaign", p.max_text_chars, required=False, allow_empty=True)


def _check_webhook_url(c: FieldChecker, event: Mapping[str, Any], allowed: Collection[str]) -> None:
    """A request's own webhook is a URL an upstream system makes Lightbox POST to: only hosts
    the deployment lists may be named, or any sender could aim the publish stage at internal
    services (the reference downloader's address rules guard GETs, not these POSTs)."""
    url = c.text(event, "webhook_url", "webhook_url", MAX_WEBHOOK_URL_CHARS, required=False)
    if not url:
        return
    try:
        parts = urlsplit(url)
        port = parts.port  # raises for a port that is not a number in range
    except ValueError as exc:
        c.reject("invalid_url", "webhook_url", f"{short(url)}: {exc}")
        return
    if parts.scheme not in ("http", "https") or not parts.hostname:
        c.reject("invalid_url", "webhook_url", f"{short(url)} is not an http(s) URL")
        return
    if parts.username is not None or parts.password is not None:
        c.reject("invalid_url", "webhook_url", "credentials in the URL")
        return
    host = parts.hostname.lower()
    named = {host, f"{host}:{port}"} if port else {host}
    if not named & {h.lower() for h in allowed}:
        c.reject(
            "webhook_not_allowed",
            "webhook_url",
            f"{host} is not in webhooks.allowed_hosts"
            + ("" if allowed else " (empty: requests may not name their own webhook)"),
        )


def _check_product(
    c: FieldChecker, product: Mapping[str, Any]
) -> tuple[str | None, Mapping[str, str] | None]:
    p = c.policy
    sku = c.text(product, "sku", "product.sku", p.max_sku_chars)
    if sku is not None and not re.fullmatch(p.sku_pattern, sku):
        c.reject("invalid_value", "product.sku", f"{short(sku)} does not match {p.sku_pattern}")
    title = c.text(product, "title", "product.title", p.max_title_chars)
    c.text(product, "brand", "product.brand", p.max_text_chars, allow_empty=True)
    category = c.text(product, "category", "product.category", p.max_text_chars, allow_empty=True)
    policy_checks.check_category(c, category)
    attrs = _check_attributes(c, product)
    if attrs:
        policy_checks.check_declared_uses(c, attrs)
    return title, attrs


def _check_attributes(c: FieldChecker, product: Mapping[str, Any]) -> Mapping[str, str] | None:
    p = c.policy
    attrs = product.get("attributes")
    if attrs is None:
        return {}
    if not isinstance(attrs, Mapping):
        c.reject("invalid_type", "product.attributes", f"expected a map, got {type_name(attrs)}")
        return None
    if len(attrs) > p.max_attributes:
        c.reject(
            "too_many_attributes", "product.attributes", f"{len(attrs)} entries, at most {p.max_attributes}"
        )
        return None
    before = len(c.out)
    for key, value in attrs.items():
        key_path = attribute_path(key)
        if c.check_text(key, key_path + ".key", p.max_attribute_key_chars) is None:
            continue
        c.check_text(value, key_path, p.max_attribute_value_chars, allow_empty=True)
    return attrs if len(c.out) == before else None


def _check_references(c: FieldChecker, event: Mapping[str, Any]) -> None:
    p = c.policy
    refs = event.get("references", MISSING)
    if refs is MISSING or refs is None:
        c.reject("missing_field", "references", "required (with a required PRODUCT reference)")
        return
    if isinstance(refs, str | bytes) or not isinstance(refs, list | tuple):
        c.reject("invalid_type", "references", f"expected a list, got {type_name(refs)}")
        return
    if len(refs) > p.max_references:
        c.reject("too_many_references", "references", f"{len(refs)} references, at most {p.max_references}")
        return
    has_product = False
    for i, ref in enumerate(refs):
        path = f"references[{i}]"
        if not isinstance(ref, Mapping):
            c.reject("invalid_type", path, f"expected a record, got {type_name(ref)}")
            continue
        url = c.text(ref, "url", f"{path}.url", p.max_url_chars)
        if url is not None:
            _check_url(c, url, f"{path}.url")
        role = c.enum(ref, "role", f"{path}.role", REFERENCE_ROLES)
        required = c.boolean(ref, "required", f"{path}.required", REFERENCE_REQUIRED_DEFAULT)
        has_product = has_product or (role == "PRODUCT" and required is True)
    if not has_product:
        c.reject(
            "no_product_reference",
            "references",
            "at least one reference with role PRODUCT and required=true is needed",
        )


def _check_url(c: FieldChecker, url: str, path: str) -> None:
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        c.reject("invalid_url", path, f"unparseable URL: {exc}")
        return
    if parts.scheme.lower() not in c.policy.reference_schemes or not parts.netloc:
        c.reject(
            "invalid_url", path, f"expected an absolute URL with scheme in {list(c.policy.reference_schemes)}"
        )


def _check_request(c: FieldChecker, request: Mapping[str, Any], templates: TemplateCatalogue) -> str | None:
    p = c.policy
    counts = [
        _check_asset_types(c, request),
        _check_allowed(c, request, "channels", p.channels),
        _check_locales(c, request),
    ]
    if all(n is not None for n in counts):
        total = counts[0] * counts[1] * counts[2]  # type: ignore[operator]
        if total > p.max_jobs_per_event:
            c.reject(
                "too_many_jobs",
                "request",
                f"asset_types x channels x locales = {total} jobs, at most {p.max_jobs_per_event}",
            )
    check_template_reference(c, request, templates)
    for axis in ("width", "height"):
        size = c.integer(request, axis, f"request.{axis}", REQUEST_DEFAULTS[axis])
        if size is not None and not (p.min_size <= size <= p.max_size and size % p.size_multiple == 0):
            c.reject(
                "invalid_size",
                f"request.{axis}",
                f"{size} must be within {p.min_size}..{p.max_size} and a multiple of {p.size_multiple}",
            )
    overlay = c.text(
        request,
        "text_overlay",
        "request.text_overlay",
        p.max_text_overlay_chars,
        required=False,
        allow_empty=True,
    )
    c.enum(request, "risk", "request.risk", RISKS, default=REQUEST_DEFAULTS["risk"])
    c.boolean(request, "confidential", "request.confidential", REQUEST_DEFAULTS["confidential"])
    c.in_range(
        request, "priority", "request.priority", REQUEST_DEFAULTS["priority"], p.min_priority, p.max_priority
    )
    c.in_range(request, "variants", "request.variants", REQUEST_DEFAULTS["variants"], 1, p.max_variants)
    return overlay


def _check_asset_types(c: FieldChecker, request: Mapping[str, Any]) -> int | None:
    values = c.string_list(request, "asset_types", "request.asset_types")
    if values is None:
        return None
    ok = True
    for i, value in enumerate(values):
        if value in c.policy.asset_types:
            continue
        ok = False
        if policy_checks.is_unsupported_asset_type(c, value):
            c.reject(
                "unsupported_use",
                f"request.asset_types[{i}]",
                f"asset type {value!r} is not produced by this pipeline",
            )
        else:
            c.reject(
                "invalid_enum",
                f"request.asset_types[{i}]",
                f"{short(value)} is not one of {list(c.policy.asset_types)}",
            )
    return len(distinct(values)) if ok else None


def _check_allowed(
    c: FieldChecker, request: Mapping[str, Any], key: str, allowed: tuple[str, ...]
) -> int | None:
    values = c.string_list(request, key, f"request.{key}")
    if values is None:
        return None
    bad = [(i, v) for i, v in enumerate(values) if v not in allowed]
    for i, value in bad:
        c.reject("invalid_enum", f"request.{key}[{i}]", f"{short(value)} is not one of {list(allowed)}")
    return None if bad else len(distinct(values))


def _check_locales(c: FieldChecker, request: Mapping[str, Any]) -> int | None:
    values = c.string_list(request, "locales", "request.locales")
    if values is None:
        return None
    bad = [(i, v) for i, v in enumerate(values) if not c.policy.locale_allowed(v)]
    for i, value in bad:
        allowed = list(c.policy.locales) or f"pattern {c.policy.locale_pattern}"
        c.reject(
            "invalid_enum", f"request.locales[{i}]", f"{short(value)} is not an allowed locale ({allowed})"
        )
    return None if bad else len(distinct(values))
