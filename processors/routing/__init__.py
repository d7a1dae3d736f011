"""Routing: rules as data that pick the backend, model and pool for each job."""

from processors.routing.rules import (
    COMPOSITOR,
    DEFAULT_RULES_PATH,
    Router,
    RoutingError,
    Rule,
    RuleSet,
    decide,
    in_canary,
    load_rules,
    parse_rules,
)

__all__ = [
    "COMPOSITOR",
    "DEFAULT_RULES_PATH",
    "Router",
    "RoutingError",
    "Rule",
    "RuleSet",
    "decide",
    "in_canary",
    "load_rules",
    "parse_rules",
]
