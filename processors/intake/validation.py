"""Intake validation: decide, without side effects, whether a catalog event may become jobs.

Events arrive Avro-decoded from catalog.events, or as JSON from the gateway and the CLI, so nothing
here trusts the schema to have checked types: every field is checked on the plain dict. The result
is a list of :class:`Rejection` (empty means accepted), one per offending field, each with a
machine-readable reason code so rejections can be counted and queried:

``missing_field`` ``invalid_type`` ``invalid_text`` ``too_long`` ``invalid_enum`` ``invalid_value``
``invalid_size`` ``invalid_url`` ``no_product_reference`` ``unknown_template`` ``restricted_term``
``unsupported_use`` ``too_many_attributes`` ``too_many_references`` ``too_many_jobs``

Oversized collections are rejected from their length alone and never scanned further, so a hostile
event (an attributes map of 100k entries) costs no more than a well-formed one.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

DEFAULT_POLICY_PATH = Path(__file__).with_name("policy.yaml")

EVENT_TYPES = ("PRODUCT_UPSERT", "ASSET_REQUEST")
REFERENCE_ROLES = ("PRODUCT", "INFLUENCER", "MOODBOARD")
RISKS = ("STANDARD", "CRITICAL", "EXPLORATORY")

# The defaults the Avro schema applies; JSON events may leave these fields out.
REQUEST_DEFAULTS: Mapping[str, Any] = {
    "width": 512,
    "height": 512,
    "text_overlay": None,
    "risk": "STANDARD",
    "confidential": False,
    "priority": 0,
    "variants": 1,
    "template_version": None,
}

# C0 controls other than \t and \n, DEL, C1 controls, and UTF-16 surrogates. A str holding a
# surrogate came from JSON ("\ud800") or a lenient decoder and cannot be encoded as UTF-8, so it
# would fail later, at Avro encoding or in a file name, far from the cause.
_BAD_TEXT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_FALSY = frozenset({"", "0", "false", "no", "none", "n/a", "off"})
_USE_SPLIT = re.compile(r"[,;/|]")


class PolicyError(ValueError):
    """The policy file itself is invalid."""


@dataclass(frozen=True)
class Rejection:
    reason: str  # machine-readable code, see the module doc
    field: str  # dotted path of the offending field ("" for the event itself)
    detail: str  # for people

    def __str__(self) -> str:
        where = self.field or "event"
        return f"{self.reason} at {where}: {self.detail}"


def reasons_as_text(rejections: Iterable[Rejection]) -> str:
    return "; ".join(str(r) for r in rejections)


class RestrictedTerms:
    """Case-insensitive whole-word matcher for a list of terms (one compiled regex for all)."""

    def __init__(self, terms: Iterable[str]) -> None:
        cleaned = sorted({" ".join(t.split()).casefold() for t in terms if t and t.strip()})
        self.terms: tuple[str, ...] = tuple(cleaned)
        self._pattern = _compile_terms(self.terms) if self.terms else None

    def find(self, text: str | None) -> list[str]:
        """The distinct terms found in text, lower-cased, in order of first appearance."""
        if not text or self._pattern is None:
            return []
        seen: dict[str, None] = {}
        for match in self._pattern.finditer(text):
            seen.setdefault(" ".join(match.group(0).split()).casefold(), None)
        return list(seen)

    def __bool__(self) -> bool:
        return bool(self.terms)


@lru_cache(maxsize=32)
def _compile_terms(terms: tuple[str, ...]) -> re.Pattern[str]:
    # Longest first so "miracle cure" wins over "cure"; lookarounds instead of \b so terms that
    # start or end with punctuation ("risk-free", "#1") still match as whole words.
    alternatives = [
        r"\s+".join(re.escape(word) for word in term.split()) for term in sorted(terms, key=len, reverse=True)
    ]
    return re.compile(r"(?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)", re.IGNORECASE)


def normalise_use(value: str) -> str:
    return re.sub(r"[\s-]+", "_", value.strip().casefold())


@dataclass(frozen=True)
class IntakePolicy:
    version: str = "1"
    max_title_chars: int = 300
    max_sku_chars: int = 128
    max_text_chars: int = 200
    max_text_overlay_chars: int = 200
    max_attributes: int = 200
    max_attribute_key_chars: int = 128
    max_attribute_value_chars: int = 1024
    max_references: int = 20
    max_url_chars: int = 2048
    min_size: int = 64
    max_size: int = 2048
    size_multiple: int = 8
    max_variants: int = 8
    min_priority: int = -100
    max_priority: int = 100
    max_jobs_per_event: int = 64
    sku_pattern: str = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
    template_id_pattern: str = r"^[a-z0-9][a-z0-9-]*$"
    template_version_pattern: str = r"^[0-9]+\.[0-9]+\.[0-9]+$"
    reference_schemes: tuple[str, ...] = ("http", "https")
    asset_types: tuple[str, ...] = ()
    unsupported_asset_types: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    locale_pattern: str = r"^[a-z]{2}-[A-Z]{2}$"
    locales: tuple[str, ...] = ()  # empty: any locale matching locale_pattern
    restricted_terms: tuple[str, ...] = ()
    unsupported_uses: tuple[str, ...] = ()
    use_attribute_keys: tuple[str, ...] = ("use", "uses", "intended_use")
    restricted: RestrictedTerms = field(init=False, repr=False, compare=False)
    _uses: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("sku_pattern", "template_id_pattern", "template_version_pattern", "locale_pattern"):
            try:
                re.compile(getattr(self, name))
            except re.error as exc:
                raise PolicyError(f"policy {name} is not a valid regex: {exc}") from exc
        if self.max_jobs_per_event < 1 or self.max_attributes < 0:
            raise PolicyError("policy limits must be positive")
        object.__setattr__(self, "restricted", RestrictedTerms(self.restricted_terms))
        object.__setattr__(self, "_uses", frozenset(map(normalise_use, self.unsupported_uses)))

    @classmethod
    def load(cls, path: str | Path | None = None) -> IntakePolicy:
        file = Path(path) if path else DEFAULT_POLICY_PATH
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise PolicyError(f"cannot read intake policy {file}: {exc}") from exc
        return cls.from_dict(data, source=str(file))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "policy") -> IntakePolicy:
        if not isinstance(data, Mapping):
            raise PolicyError(f"{source}: the top level must be a mapping")
        flat = dict(data)
        limits = flat.pop("limits", None) or {}
        if not isinstance(limits, Mapping):
            raise PolicyError(f"{source}: limits must be a mapping")
        flat.update(limits)
        known = {f.name: f for f in fields(cls) if f.init}
        unknown = sorted(set(flat) - set(known))
        if unknown:
            raise PolicyError(f"{source}: unknown policy keys {unknown}")
        kwargs: dict[str, Any] = {}
        for name, value in flat.items():
            default = getattr(cls, name)
            if isinstance(default, tuple):
                if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                    raise PolicyError(f"{source}: {name} must be a list of strings")
                kwargs[name] = tuple(value)
            elif isinstance(default, int):
                if not isinstance(value, int) or isinstance(value, bool):
                    raise PolicyError(f"{source}: {name} must be an integer")
                kwargs[name] = value
            else:
                kwargs[name] = str(value)
        return cls(**kwargs)

    def is_unsupported_use(self, value: str) -> bool:
        return normalise_use(value) in self._uses

    def locale_allowed(self, locale: str) -> bool:
        if self.locales:
            return locale in self.locales
        return re.fullmatch(self.locale_pattern, locale) is not None


def with_defaults(event: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a validated event with the schema's defaults filled in (for JSON events)."""
    out = dict(event)
    product = dict(out["product"])
    product["attributes"] = dict(product.get("attributes") or {})
    out["product"] = product
    out["references"] = [
        {"url": r["url"], "role": r["role"], "required": bool(r.get("required", False))}
        for r in out.get("references") or []
    ]
    # A null or absent field takes the schema default; a blank optional string means "not set".
    request = dict(REQUEST_DEFAULTS)
    request.update({k: v for k, v in dict(out["request"]).items() if v is not None})
    for key in ("text_overlay", "template_version"):
        if isinstance(request[key], str) and not request[key].strip():
            request[key] = None
    out["request"] = request
    out["campaign"] = out.get("campaign") or None
    return out


# --- the checks --------------------------------------------------------------------------------

_MISSING = object()


class _Checker:
    """Accumulates rejections; each getter returns the field's value only when it is valid."""

    def __init__(self, policy: IntakePolicy) -> None:
        self.policy = policy
        self.out: list[Rejection] = []

    def reject(self, reason: str, path: str, detail: str) -> None:
        self.out.append(Rejection(reason, path, detail))

    def section(self, obj: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any] | None:
        value = obj.get(key, _MISSING)
        if value is _MISSING or value is None:
            self.reject("missing_field", path, "required")
            return None
        if not isinstance(value, Mapping):
            self.reject("invalid_type", path, f"expected a record, got {_type_name(value)}")
            return None
        return value

    def text(
        self,
        obj: Mapping[str, Any],
        key: str,
        path: str,
        max_chars: int,
        *,
        required: bool = True,
        allow_empty: bool = False,
    ) -> str | None:
        value = obj.get(key, _MISSING)
        if value is _MISSING or value is None:
            if required:
                self.reject("missing_field", path, "required")
            return None
        return self.check_text(value, path, max_chars, allow_empty=allow_empty)

    def check_text(
        self, value: object, path: str, max_chars: int, *, allow_empty: bool = False
    ) -> str | None:
        if isinstance(value, bytes | bytearray):
            try:
                bytes(value).decode("utf-8")
            except UnicodeDecodeError as exc:
                self.reject("invalid_text", path, f"not valid UTF-8 ({exc.reason} at byte {exc.start})")
                return None
            self.reject("invalid_type", path, "expected a string, got bytes")
            return None
        if not isinstance(value, str):
            self.reject("invalid_type", path, f"expected a string, got {_type_name(value)}")
            return None
        if len(value) > max_chars:
            self.reject("too_long", path, f"{len(value)} characters, at most {max_chars}")
            return None
        bad = _BAD_TEXT.search(value)
        if bad:
            char = ord(bad.group(0))
            what = (
                "an unpaired surrogate (not valid UTF-8)"
                if 0xD800 <= char <= 0xDFFF
                else "a control character"
            )
            self.reject("invalid_text", path, f"contains {what} U+{char:04X} at index {bad.start()}")
            return None
        if not allow_empty and not value.strip():
            self.reject("missing_field", path, "must not be empty")
            return None
        return value

    def integer(self, obj: Mapping[str, Any], key: str, path: str, default: int | None = None) -> int | None:
        value = obj.get(key, _MISSING)
        if value is _MISSING or value is None:
            if default is None:
                self.reject("missing_field", path, "required")
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.reject("invalid_type", path, f"expected an integer, got {_type_name(value)}")
            return None
        return value

    def boolean(self, obj: Mapping[str, Any], key: str, path: str, default: bool) -> bool | None:
        value = obj.get(key, _MISSING)
        if value is _MISSING or value is None:
            return default
        if not isinstance(value, bool):
            self.reject("invalid_type", path, f"expected a boolean, got {_type_name(value)}")
            return None
        return value

    def enum(
        self,
        obj: Mapping[str, Any],
        key: str,
        path: str,
        symbols: tuple[str, ...],
        default: str | None = None,
    ) -> str | None:
        value = obj.get(key, _MISSING)
        if value is _MISSING or value is None:
            if default is None:
                self.reject("missing_field", path, "required")
            return default
        if not isinstance(value, str):
            self.reject("invalid_type", path, f"expected a string, got {_type_name(value)}")
            return None
        if value not in symbols:
            self.reject("invalid_enum", path, f"{_short(value)} is not one of {list(symbols)}")
            return None
        return value

    def string_list(self, obj: Mapping[str, Any], key: str, path: str) -> list[str] | None:
        value = obj.get(key, _MISSING)
        if value is _MISSING or value is None:
            self.reject("missing_field", path, "required")
            return None
        if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
            self.reject("invalid_type", path, f"expected a list, got {_type_name(value)}")
            return None
        if not value:
            self.reject("missing_field", path, "at least one value is required")
            return None
        # A list longer than the job cap cannot be accepted whatever it holds: do not scan it.
        if len(value) > self.policy.max_jobs_per_event:
            self.reject(
                "too_many_jobs",
                path,
                f"{len(value)} values; the event may fan out to "
                f"at most {self.policy.max_jobs_per_event} jobs",
            )
            return None
        good: list[str] = []
        for i, item in enumerate(value):
            text = self.check_text(item, f"{path}[{i}]", self.policy.max_text_chars)
            if text is not None:
                good.append(text)
        return good if len(good) == len(value) else None


def validate_event(
    event: Mapping[str, Any],
    policy: IntakePolicy,
    known_templates: Callable[[str], bool],
    *,
    known_version: Callable[[str, str], bool] | None = None,
) -> list[Rejection]:
    """Every reason the event cannot be accepted; an empty list means accept.

    known_templates(template_id) says whether a template exists; known_version(template_id,
    version), when given, also checks a pinned request.template_version.
    """
    if not isinstance(event, Mapping):
        return [Rejection("invalid_type", "", f"expected a record, got {_type_name(event)}")]
    c = _Checker(policy)
    _check_envelope(c, event)
    product = c.section(event, "product", "product")
    title = attrs = None
    if product is not None:
        title, attrs = _check_product(c, product)
    _check_references(c, event)
    request = c.section(event, "request", "request")
    overlay = None
    if request is not None:
        overlay = _check_request(c, request, known_templates, known_version)
    _check_restricted(c, title, attrs, overlay)
    return c.out


def _check_envelope(c: _Checker, event: Mapping[str, Any]) -> None:
    p = c.policy
    c.text(event, "event_id", "event_id", p.max_text_chars)
    c.enum(event, "event_type", "event_type", EVENT_TYPES)
    occurred = event.get("occurred_at", _MISSING)
    if occurred is _MISSING or occurred is None:
        c.reject("missing_field", "occurred_at", "required")
    elif not isinstance(occurred, dt.datetime) and (
        isinstance(occurred, bool) or not isinstance(occurred, int)
    ):
        # fastavro decodes timestamp-millis to datetime; JSON carries epoch milliseconds.
        c.reject("invalid_type", "occurred_at", f"expected epoch milliseconds, got {_type_name(occurred)}")
    c.text(event, "source", "source", p.max_text_chars, allow_empty=True)
    c.text(event, "campaign", "campaign", p.max_text_chars, required=False, allow_empty=True)


def _check_product(c: _Checker, product: Mapping[str, Any]) -> tuple[str | None, Mapping[str, str] | None]:
    p = c.policy
    sku = c.text(product, "sku", "product.sku", p.max_sku_chars)
    if sku is not None and not re.fullmatch(p.sku_pattern, sku):
        c.reject("invalid_value", "product.sku", f"{_short(sku)} does not match {p.sku_pattern}")
    title = c.text(product, "title", "product.title", p.max_title_chars)
    c.text(product, "brand", "product.brand", p.max_text_chars, allow_empty=True)
    category = c.text(product, "category", "product.category", p.max_text_chars, allow_empty=True)
    if category and c.policy.is_unsupported_use(category):
        c.reject("unsupported_use", "product.category", f"category {category!r} is not served")
    attrs = _check_attributes(c, product)
    if attrs:
        _check_declared_uses(c, attrs)
    return title, attrs


def _check_attributes(c: _Checker, product: Mapping[str, Any]) -> Mapping[str, str] | None:
    p = c.policy
    attrs = product.get("attributes")
    if attrs is None:
        return {}
    if not isinstance(attrs, Mapping):
        c.reject("invalid_type", "product.attributes", f"expected a map, got {_type_name(attrs)}")
        return None
    if len(attrs) > p.max_attributes:
        c.reject(
            "too_many_attributes", "product.attributes", f"{len(attrs)} entries, at most {p.max_attributes}"
        )
        return None
    before = len(c.out)
    for key, value in attrs.items():
        key_path = f"product.attributes[{_short(key, 40)}]"
        if c.check_text(key, key_path + ".key", p.max_attribute_key_chars) is None:
            continue
        c.check_text(value, key_path, p.max_attribute_value_chars, allow_empty=True)
    return attrs if len(c.out) == before else None


def _check_declared_uses(c: _Checker, attrs: Mapping[str, str]) -> None:
    use_keys = {normalise_use(k) for k in c.policy.use_attribute_keys}
    for key, value in attrs.items():
        if normalise_use(key) in use_keys:
            for use in _USE_SPLIT.split(value):
                if use.strip() and c.policy.is_unsupported_use(use):
                    c.reject(
                        "unsupported_use",
                        f"product.attributes[{_short(key, 40)}]",
                        f"use {use.strip()!r} is not served",
                    )
        elif c.policy.is_unsupported_use(key) and normalise_use(value) not in _FALSY:
            c.reject(
                "unsupported_use", f"product.attributes[{_short(key, 40)}]", f"use {key!r} is not served"
            )


def _check_references(c: _Checker, event: Mapping[str, Any]) -> None:
    p = c.policy
    refs = event.get("references", _MISSING)
    if refs is _MISSING or refs is None:
        c.reject("missing_field", "references", "required (with a required PRODUCT reference)")
        return
    if isinstance(refs, str | bytes) or not isinstance(refs, list | tuple):
        c.reject("invalid_type", "references", f"expected a list, got {_type_name(refs)}")
        return
    if len(refs) > p.max_references:
        c.reject("too_many_references", "references", f"{len(refs)} references, at most {p.max_references}")
        return
    has_product = False
    for i, ref in enumerate(refs):
        path = f"references[{i}]"
        if not isinstance(ref, Mapping):
            c.reject("invalid_type", path, f"expected a record, got {_type_name(ref)}")
            continue
        url = c.text(ref, "url", f"{path}.url", p.max_url_chars)
        if url is not None:
            _check_url(c, url, f"{path}.url")
        role = c.enum(ref, "role", f"{path}.role", REFERENCE_ROLES)
        required = c.boolean(ref, "required", f"{path}.required", False)
        has_product = has_product or (role == "PRODUCT" and required is True)
    if not has_product:
        c.reject(
            "no_product_reference",
            "references",
            "at least one reference with role PRODUCT and required=true is needed",
        )


def _check_url(c: _Checker, url: str, path: str) -> None:
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        c.reject("invalid_url", path, f"unparseable URL: {exc}")
        return
    if parts.scheme.lower() not in c.policy.reference_schemes or not parts.netloc:
        c.reject(
            "invalid_url", path, f"expected an absolute URL with scheme in {list(c.policy.reference_schemes)}"
        )


def _check_request(
    c: _Checker,
    request: Mapping[str, Any],
    known_templates: Callable[[str], bool],
    known_version: Callable[[str, str], bool] | None,
) -> str | None:
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
    _check_template(c, request, known_templates, known_version)
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
    c.enum(request, "risk", "request.risk", RISKS, default="STANDARD")
    c.boolean(request, "confidential", "request.confidential", False)
    _check_range(c, request, "priority", 0, p.min_priority, p.max_priority)
    _check_range(c, request, "variants", 1, 1, p.max_variants)
    return overlay


def _check_asset_types(c: _Checker, request: Mapping[str, Any]) -> int | None:
    values = c.string_list(request, "asset_types", "request.asset_types")
    if values is None:
        return None
    ok = True
    for i, value in enumerate(values):
        if value in c.policy.asset_types:
            continue
        ok = False
        if value in c.policy.unsupported_asset_types or c.policy.is_unsupported_use(value):
            c.reject(
                "unsupported_use",
                f"request.asset_types[{i}]",
                f"asset type {value!r} is not produced by this pipeline",
            )
        else:
            c.reject(
                "invalid_enum",
                f"request.asset_types[{i}]",
                f"{_short(value)} is not one of {list(c.policy.asset_types)}",
            )
    return len(set(values)) if ok else None


def _check_allowed(c: _Checker, request: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> int | None:
    values = c.string_list(request, key, f"request.{key}")
    if values is None:
        return None
    bad = [(i, v) for i, v in enumerate(values) if v not in allowed]
    for i, value in bad:
        c.reject("invalid_enum", f"request.{key}[{i}]", f"{_short(value)} is not one of {list(allowed)}")
    return None if bad else len(set(values))


def _check_locales(c: _Checker, request: Mapping[str, Any]) -> int | None:
    values = c.string_list(request, "locales", "request.locales")
    if values is None:
        return None
    bad = [(i, v) for i, v in enumerate(values) if not c.policy.locale_allowed(v)]
    for i, value in bad:
        allowed = list(c.policy.locales) or f"pattern {c.policy.locale_pattern}"
        c.reject(
            "invalid_enum", f"request.locales[{i}]", f"{_short(value)} is not an allowed locale ({allowed})"
        )
    return None if bad else len(set(values))


def _check_template(
    c: _Checker,
    request: Mapping[str, Any],
    known_templates: Callable[[str], bool],
    known_version: Callable[[str, str], bool] | None,
) -> None:
    p = c.policy
    template_id = c.text(request, "template_id", "request.template_id", p.max_text_chars)
    if template_id is not None:
        if not re.fullmatch(p.template_id_pattern, template_id):
            c.reject(
                "invalid_value",
                "request.template_id",
                f"{_short(template_id)} does not match {p.template_id_pattern}",
            )
            template_id = None
        elif not known_templates(template_id):
            c.reject("unknown_template", "request.template_id", f"no template named {template_id!r}")
            template_id = None
    version = c.text(
        request,
        "template_version",
        "request.template_version",
        p.max_text_chars,
        required=False,
        allow_empty=True,
    )
    if version is None or not version.strip():
        return  # not pinned: the current version is taken at fan-out
    if not re.fullmatch(p.template_version_pattern, version):
        c.reject(
            "invalid_value", "request.template_version", f"{_short(version)} is not a version like 1.2.0"
        )
    elif template_id is not None and known_version is not None and not known_version(template_id, version):
        c.reject(
            "unknown_template",
            "request.template_version",
            f"template {template_id!r} has no version {version!r}",
        )


def _check_range(
    c: _Checker, request: Mapping[str, Any], key: str, default: int, low: int, high: int
) -> None:
    value = c.integer(request, key, f"request.{key}", default)
    if value is not None and not low <= value <= high:
        c.reject("invalid_value", f"request.{key}", f"{value} is not within {low}..{high}")


def _check_restricted(
    c: _Checker, title: str | None, attrs: Mapping[str, str] | None, overlay: str | None
) -> None:
    terms = c.policy.restricted
    if not terms:
        return
    texts: list[tuple[str, str | None]] = [("product.title", title), ("request.text_overlay", overlay)]
    texts += [(f"product.attributes[{_short(k, 40)}]", v) for k, v in (attrs or {}).items()]
    for path, text in texts:
        found = terms.find(text)
        if found:
            c.reject("restricted_term", path, f"contains restricted term(s): {', '.join(found)}")


def _type_name(value: object) -> str:
    return type(value).__name__


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
