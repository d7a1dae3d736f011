"""Channel presets, read from YAML (the packaged presets.yaml, or ``channels.presets_file``).

A preset is a channel's list of derivatives, each a DerivativeSpec (size, format, framing,
background) and the rule checks its file must pass. Everything is validated when the file is
read: an unknown field, fit, format, rule or a bad parameter is a ValueError naming the channel
and derivative, so a broken presets file stops the stage at start instead of failing jobs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from processors.channels.rules import RuleCheck, validate_parameter
from processors.channels.spec import BACKGROUNDS, FITS, FORMATS, DerivativeSpec

PACKAGED = Path(__file__).with_name("presets.yaml")
DEFAULT_CHANNEL = "default"

_DERIVATIVE_FIELDS = frozenset(
    {"name", "size", "format", "quality", "fit", "fill", "margin", "background", "rules"}
)


@dataclass(frozen=True)
class Preset:
    """One derivative of a channel and the checks its file must pass."""

    spec: DerivativeSpec
    checks: tuple[RuleCheck, ...] = ()


@dataclass(frozen=True)
class Presets:
    channels: Mapping[str, tuple[Preset, ...]]

    def for_channel(self, channel: str) -> tuple[Preset, ...]:
        """The presets of ``channel``, or the default channel's for one without its own."""
        return self.channels.get(channel) or self.channels[DEFAULT_CHANNEL]

    def specs(self, channel: str) -> list[DerivativeSpec]:
        return [preset.spec for preset in self.for_channel(channel)]


def load_presets(path: str | Path | None = None) -> Presets:
    """The presets in ``path`` (empty or None: the packaged ones), validated. Cached per path."""
    return _load(str(Path(path).resolve()) if path else str(PACKAGED))


def derivatives_for(channel: str, path: str | Path | None = None) -> list[DerivativeSpec]:
    """The derivative specs of ``channel`` (the default set for a channel without its own)."""
    return load_presets(path).specs(channel)


@lru_cache(maxsize=8)
def _load(path: str) -> Presets:
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: the top level must be a mapping")
    rule_sets = _rule_sets(data.get("rule_sets") or {}, path)
    raw_channels = data.get("channels") or {}
    if not isinstance(raw_channels, Mapping):
        raise ValueError(f"{path}: channels must be a mapping")
    channels = {str(name): _channel(str(name), raw, rule_sets, path) for name, raw in raw_channels.items()}
    if DEFAULT_CHANNEL not in channels:
        raise ValueError(f"{path}: a {DEFAULT_CHANNEL!r} channel is required")
    names = [p.spec.name for presets in channels.values() for p in presets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        # Names are file names under the job's folder: two channels sharing one would collide.
        raise ValueError(f"{path}: derivative names must be unique: {duplicates}")
    return Presets(channels)


def _rule_sets(raw: Any, path: str) -> dict[str, tuple[RuleCheck, ...]]:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path}: rule_sets must be a mapping")
    sets: dict[str, tuple[RuleCheck, ...]] = {}
    for set_name, rules in raw.items():
        if not isinstance(rules, Mapping) or not rules:
            raise ValueError(f"{path}: rule set {set_name!r} must map rules to parameters")
        checks = []
        for rule, parameter in rules.items():
            try:
                validate_parameter(str(rule), parameter)
            except ValueError as exc:
                raise ValueError(f"{path}: rule set {set_name!r}: {exc}") from exc
            checks.append(RuleCheck(str(set_name), str(rule), parameter))
        sets[str(set_name)] = tuple(checks)
    return sets


def _channel(
    name: str, raw: Any, rule_sets: dict[str, tuple[RuleCheck, ...]], path: str
) -> tuple[Preset, ...]:
    derivatives = raw.get("derivatives") if isinstance(raw, Mapping) else None
    if not isinstance(derivatives, list) or not derivatives:
        raise ValueError(f"{path}: channel {name!r} needs a non-empty list of derivatives")
    return tuple(_preset(name, entry, rule_sets, path) for entry in derivatives)


def _preset(channel: str, raw: Any, rule_sets: dict[str, tuple[RuleCheck, ...]], path: str) -> Preset:
    where = f"{path}: channel {channel!r}"
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: each derivative must be a mapping")
    where = f"{where}, derivative {raw.get('name')!r}"
    unknown = set(raw) - _DERIVATIVE_FIELDS
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}")
    try:
        width, height = (int(v) for v in raw["size"])
        spec = DerivativeSpec(
            name=str(raw["name"]),
            width=width,
            height=height,
            fit=_one_of(raw.get("fit", "contain"), FITS, "fit"),
            format=_one_of(str(raw.get("format", "JPEG")).upper(), FORMATS, "format"),
            quality=int(raw.get("quality", 90)),
            fill=float(raw.get("fill", 0.9)),
            margin=float(raw.get("margin", 0.03)),
            background=_one_of(raw.get("background", "auto"), BACKGROUNDS, "background"),
        )
    except KeyError as exc:
        raise ValueError(f"{where}: {exc.args[0]!r} is required") from exc
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from exc
    if width <= 0 or height <= 0 or not 1 <= spec.quality <= 100 or not 0 < spec.fill <= 1:
        raise ValueError(f"{where}: size must be positive, quality 1-100, fill in (0, 1]")
    if not spec.name or "/" in spec.name:
        raise ValueError(f"{where}: the name must be a plain file name")
    checks: list[RuleCheck] = []
    for set_name in raw.get("rules") or []:
        if set_name not in rule_sets:
            raise ValueError(f"{where}: unknown rule set {set_name!r}")
        checks.extend(rule_sets[set_name])
    return Preset(spec, tuple(checks))


def _one_of(value: Any, allowed: tuple[str, ...], what: str) -> Any:
    if value not in allowed:
        raise ValueError(f"{what} must be one of {', '.join(allowed)}, not {value!r}")
    return value
