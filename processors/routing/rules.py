"""Routing rules as data: which backend, model and pool serve a job (see rules.yaml for the format).

Rules are evaluated in order and the first match wins; the last rule matches everything. The
decision is returned as the job schema's RouteDecision record, carrying the rule id and the rules
file's version, so every job can say which rule, in which revision of the file, routed it.

A Router re-reads its file when it changes (``maybe_reload``, called per batch). An invalid file
never replaces valid rules: the error is logged and returned, and the previous rules stay.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from processors.intake.event_schema import REQUEST_DEFAULTS, RISKS, text_or_none

log = logging.getLogger(__name__)

DEFAULT_RULES_PATH = Path(__file__).with_name("rules.yaml")
COMPOSITOR = "compositor"
_MATCH_KEYS = frozenset({"asset_type", "needs_text", "risk", "confidential", "min_priority"})
_DECISION_KEYS = frozenset({"backend", "model", "pool", "fallbacks", "params"})
_CANARY_KEYS = frozenset({"backend", "model", "pool", "share"})


class RoutingError(ValueError):
    """The rules file is invalid; names the rule and the field."""

    def __init__(self, message: str, rule_id: str = "", field: str = "") -> None:
        super().__init__(message)
        self.rule_id = rule_id
        self.field = field


@dataclass(frozen=True)
class Match:
    asset_types: frozenset[str] | None = None
    needs_text: bool | None = None
    risks: frozenset[str] | None = None
    confidential: bool | None = None
    min_priority: int | None = None

    @property
    def is_catch_all(self) -> bool:
        return self == Match()

    def holds(self, facts: JobFacts) -> bool:
        return (
            (self.asset_types is None or facts.asset_type in self.asset_types)
            and (self.needs_text is None or facts.needs_text == self.needs_text)
            and (self.risks is None or facts.risk in self.risks)
            and (self.confidential is None or facts.confidential == self.confidential)
            and (self.min_priority is None or facts.priority >= self.min_priority)
        )


@dataclass(frozen=True)
class Canary:
    backend: str
    model: str
    pool: str
    share: float


@dataclass(frozen=True)
class Rule:
    id: str
    match: Match
    backend: str
    model: str
    pool: str
    fallbacks: tuple[str, ...]
    params: tuple[tuple[str, str], ...]
    canary: Canary | None = None


@dataclass(frozen=True)
class RuleSet:
    version: str
    rules: tuple[Rule, ...]
    source: str = "rules"


@dataclass(frozen=True)
class JobFacts:
    """The few job fields the rules look at, with the request schema's defaults."""

    job_id: str
    asset_type: str
    needs_text: bool
    risk: str
    confidential: bool
    priority: int

    @classmethod
    def of(cls, job: Mapping[str, Any]) -> JobFacts:
        spec = job.get("spec") or {}
        return cls(
            job_id=str(job.get("job_id") or ""),
            asset_type=str(spec.get("asset_type") or ""),
            needs_text=text_or_none(spec.get("text_overlay")) is not None,
            risk=str(spec.get("risk") or REQUEST_DEFAULTS["risk"]),
            confidential=bool(spec.get("confidential", REQUEST_DEFAULTS["confidential"])),
            priority=int(spec.get("priority") or REQUEST_DEFAULTS["priority"]),
        )


# --- parsing ----------------------------------------------------------------------------------


def load_rules(path: str | Path | None = None) -> RuleSet:
    file = Path(path) if path else DEFAULT_RULES_PATH
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RoutingError(f"{file}: cannot read routing rules: {exc}") from exc
    except yaml.YAMLError as exc:
        raise RoutingError(f"{file}: not valid YAML: {exc}") from exc
    return parse_rules(data, source=str(file))


def parse_rules(data: Any, source: str = "rules") -> RuleSet:
    if not isinstance(data, Mapping):
        raise RoutingError(f"{source}: the top level must be a mapping with version and rules")
    version = data.get("version")
    # Floats are refused: YAML reads an unquoted 1.10 as 1.1, and decisions record the version.
    if isinstance(version, bool) or not isinstance(version, str | int) or not str(version).strip():
        raise RoutingError(
            f"{source}: 'version' is required, as a quoted string (got {version!r})", field="version"
        )
    raw_rules = data.get("rules")
    if not isinstance(raw_rules, list) or not raw_rules:
        raise RoutingError(f"{source}: 'rules' must be a non-empty list", field="rules")
    unknown = set(data) - {"version", "rules"}
    if unknown:
        raise RoutingError(f"{source}: unknown top-level keys {sorted(unknown)}")
    rules = tuple(_parse_rule(raw, i, source) for i, raw in enumerate(raw_rules))
    _check_order(rules, source)
    return RuleSet(str(version), rules, source)


def _check_order(rules: tuple[Rule, ...], source: str) -> None:
    seen: set[str] = set()
    for rule in rules:
        if rule.id in seen:
            raise RoutingError(f"{source}: rule {rule.id!r}: id: used twice", rule.id, "id")
        seen.add(rule.id)
    last = rules[-1]
    if not last.match.is_catch_all:
        raise RoutingError(
            f"{source}: rule {last.id!r}: match: the last rule must be the default, with an empty match",
            last.id,
            "match",
        )
    for rule in rules[:-1]:
        if rule.match.is_catch_all:
            raise RoutingError(
                f"{source}: rule {rule.id!r}: match: an empty match before the "
                f"last rule makes the rules after it unreachable",
                rule.id,
                "match",
            )


class _RuleParser:
    """Parses one rule; every error names the rule and the field."""

    def __init__(self, raw: Mapping[str, Any], index: int, source: str) -> None:
        self.raw = raw
        self.source = source
        rule_id = raw.get("id")
        self.rule_id = rule_id if isinstance(rule_id, str) and rule_id.strip() else f"#{index + 1}"

    def error(self, field: str, problem: str) -> RoutingError:
        return RoutingError(f"{self.source}: rule {self.rule_id!r}: {field}: {problem}", self.rule_id, field)

    def mapping(self, value: Any, field: str, allowed: frozenset[str]) -> Mapping[str, Any]:
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise self.error(field, "must be a mapping")
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise self.error(f"{field}.{unknown[0]}", f"unknown key (known: {sorted(allowed)})")
        return value

    def text(self, value: Any, field: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.error(field, "must be a non-empty string")
        return value

    def flag(self, value: Any, field: str) -> bool | None:
        if value is not None and not isinstance(value, bool):
            raise self.error(field, "must be true or false")
        return value

    def names(self, value: Any, field: str, allowed: Sequence[str] | None = None) -> frozenset[str] | None:
        if value is None:
            return None
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items or not all(isinstance(v, str) and v for v in items):
            raise self.error(field, "must be a non-empty list of strings")
        bad = [v for v in items if allowed is not None and v not in allowed]
        if bad:
            raise self.error(field, f"{bad[0]!r} is not one of {list(allowed or ())}")
        return frozenset(items)

    def fallback(self, value: Any, field: str) -> str:
        if isinstance(value, str):
            backend, _, model = value.partition(":")
            if backend.strip() and model.strip():
                return value
        raise self.error(field, f"{value!r} must be 'backend:model'")

    def params(self, value: Any, field: str) -> tuple[tuple[str, str], ...]:
        if value is None:
            return ()
        if not isinstance(value, Mapping):
            raise self.error(field, "must be a mapping of names to values")
        out = []
        for key, item in value.items():
            if not isinstance(key, str) or isinstance(item, Mapping | list) or item is None:
                raise self.error(f"{field}.{key}", "must be a string, number or boolean")
            # Job params are strings; booleans in YAML's spelling, not Python's.
            out.append((key, str(item).lower() if isinstance(item, bool) else str(item)))
        return tuple(out)


def _parse_rule(raw: Any, index: int, source: str) -> Rule:
    if not isinstance(raw, Mapping):
        raise RoutingError(f"{source}: rule #{index + 1}: must be a mapping", f"#{index + 1}")
    p = _RuleParser(raw, index, source)
    unknown = sorted(set(raw) - {"id", "match", "decision", "canary"})
    if unknown:
        raise p.error(unknown[0], "unknown key (known: id, match, decision, canary)")
    rule_id = p.text(raw.get("id"), "id")
    match = _parse_match(p, raw.get("match"))
    decision = p.mapping(raw.get("decision"), "decision", _DECISION_KEYS)
    backend = p.text(decision.get("backend"), "decision.backend")
    model = p.text(decision.get("model"), "decision.model")
    pool = p.text(decision.get("pool"), "decision.pool")
    fallbacks_raw = decision.get("fallbacks")
    if not isinstance(fallbacks_raw, list) or not fallbacks_raw:
        raise p.error(
            "decision.fallbacks", f"must be a non-empty list ending with '{COMPOSITOR}:{COMPOSITOR}'"
        )
    fallbacks = tuple(p.fallback(f, f"decision.fallbacks[{i}]") for i, f in enumerate(fallbacks_raw))
    # The compositor needs no model: with it last, every job gets an image on any machine.
    if fallbacks[-1].partition(":")[0] != COMPOSITOR:
        raise p.error(
            "decision.fallbacks", f"the last fallback must be the {COMPOSITOR} backend, got {fallbacks[-1]!r}"
        )
    params = p.params(decision.get("params"), "decision.params")
    canary = _parse_canary(p, raw.get("canary"), backend, pool)
    return Rule(rule_id, match, backend, model, pool, fallbacks, params, canary)


def _parse_match(p: _RuleParser, raw: Any) -> Match:
    match = p.mapping(raw, "match", _MATCH_KEYS)
    min_priority = match.get("min_priority")
    if min_priority is not None and (isinstance(min_priority, bool) or not isinstance(min_priority, int)):
        raise p.error("match.min_priority", "must be an integer")
    return Match(
        asset_types=p.names(match.get("asset_type"), "match.asset_type"),
        needs_text=p.flag(match.get("needs_text"), "match.needs_text"),
        risks=p.names(match.get("risk"), "match.risk", RISKS),
        confidential=p.flag(match.get("confidential"), "match.confidential"),
        min_priority=min_priority,
    )


def _parse_canary(p: _RuleParser, raw: Any, backend: str, pool: str) -> Canary | None:
    if raw is None:
        return None
    canary = p.mapping(raw, "canary", _CANARY_KEYS)
    share = canary.get("share")
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
        raise p.error("canary.share", f"must be a number within 0..1, got {share!r}")
    return Canary(
        backend=p.text(canary.get("backend", backend), "canary.backend"),
        model=p.text(canary.get("model"), "canary.model"),
        pool=p.text(canary.get("pool", pool), "canary.pool"),
        share=float(share),
    )


# --- routing ----------------------------------------------------------------------------------


def in_canary(rule_id: str, job_id: str, share: float) -> bool:
    """Deterministic: a job (and its replays, which keep the id) always lands on the same side.
    Salted with the rule id so two rules' canaries do not sample the same jobs."""
    digest = hashlib.sha256(f"{rule_id}|{job_id}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def decide(rules: RuleSet, job: Mapping[str, Any]) -> dict[str, Any]:
    facts = JobFacts.of(job)
    # The last rule is a catch-all (checked at parse time), so next() always finds one.
    rule = next(r for r in rules.rules if r.match.holds(facts))
    decision: dict[str, Any] = {
        "rule_id": rule.id,
        "rules_version": rules.version,
        "backend": rule.backend,
        "model": rule.model,
        "pool": rule.pool,
        "fallbacks": list(rule.fallbacks),
        "params": _params(rule, job),
        "canary": False,
    }
    canary = rule.canary
    if canary is not None and in_canary(rule.id, facts.job_id, canary.share):
        primary = f"{rule.backend}:{rule.model}"
        decision.update(
            backend=canary.backend,
            model=canary.model,
            pool=canary.pool,
            fallbacks=[primary, *(f for f in rule.fallbacks if f != primary)],
            canary=True,
        )
    return decision


def _params(rule: Rule, job: Mapping[str, Any]) -> dict[str, str]:
    params = dict(rule.params)
    # The generator reads the compositor's scene from the route params; it comes from the
    # prompt template (prompt.variables["scene"]), unless a rule pins one.
    scene = ((job.get("prompt") or {}).get("variables") or {}).get("scene")
    if scene and "scene" not in params:
        params["scene"] = str(scene)
    return params


class Router:
    """Routes jobs with the current rules; ``maybe_reload`` picks up edits to the file."""

    def __init__(self, rules: RuleSet, path: str | Path | None = None) -> None:
        self._rules = rules
        self.path = Path(path) if path else None
        self._signature = _signature(self.path) if self.path else None
        self.last_error: RoutingError | None = None

    @classmethod
    def from_file(cls, path: str | Path | None = None) -> Router:
        file = Path(path) if path else DEFAULT_RULES_PATH
        # Signature first: an edit landing while we parse is then seen by the next reload.
        router = cls(RuleSet("", ()), file)
        router._rules = load_rules(file)
        return router

    @property
    def rules(self) -> RuleSet:
        return self._rules

    @property
    def version(self) -> str:
        return self._rules.version

    def route(self, job: Mapping[str, Any]) -> dict[str, Any]:
        return decide(self._rules, job)

    def maybe_reload(self) -> RoutingError | None:
        """Re-read the file if it changed since the last look. Returns the error when the new
        contents are invalid (the previous rules stay in force), else None. A file that stays
        invalid is reported once, not on every batch."""
        if self.path is None:
            return None
        signature = _signature(self.path)
        if signature == self._signature:
            return None
        self._signature = signature
        try:
            rules = load_rules(self.path)
        except RoutingError as exc:
            self.last_error = exc
            log.error("routing rules not reloaded, keeping version %s: %s", self.version, exc)
            return exc
        previous, self._rules, self.last_error = self.version, rules, None
        log.info("routing rules reloaded from %s: version %s -> %s", self.path, previous, rules.version)
        return None


def _signature(path: Path) -> tuple[int, int, int] | None:
    # mtime alone can miss a rewrite within the filesystem's timestamp granularity; size and
    # inode (editors that save by rename) catch most of those.
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)
