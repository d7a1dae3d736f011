"""One job's derivatives for its channel: framed, encoded, checked, and the verdicts recorded.

This is what postprocess calls. For each of the channel's presets: frame the chosen image
(keeping the product in frame), encode it with the job's metadata (IPTC digital source type,
lineage), decode the file and run the preset's rule checks on it, then, when there were checks,
encode the same pixels again with the verdicts in the XMP (the encoder is deterministic, so the
file's pixels are the ones that were checked). A broken rule is never silent: it is returned,
and ``hold_for_review`` puts it on the job, where the publish stage holds a flagged job.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from PIL import Image

from processors.channels.presets import Preset
from processors.channels.rules import Verdict, check
from processors.channels.spec import DerivativeSpec
from processors.imaging.derivatives import Metadata, encode, frame

# quality.reasons entries for broken channel rules start with this.
REASON_PREFIX = "channel_rule"


@dataclass(frozen=True)
class ChannelDerivative:
    spec: DerivativeSpec
    data: bytes
    verdicts: tuple[Verdict, ...]

    @property
    def broken(self) -> tuple[Verdict, ...]:
        return tuple(v for v in self.verdicts if not v.passed)


def render_channel(
    image: Image.Image,
    presets: tuple[Preset, ...],
    metadata: Metadata,
    product_mask: Image.Image | None = None,
) -> list[ChannelDerivative]:
    """Every derivative of ``presets`` for ``image``, checked."""
    out = []
    for preset in presets:
        pixels, mask = frame(image, preset.spec, product_mask)
        data = encode(pixels, preset.spec, metadata)
        verdicts = check(data, mask, preset.checks)
        if verdicts:
            data = encode(pixels, preset.spec, replace(metadata, channel_checks=verdicts_json(verdicts)))
        out.append(ChannelDerivative(preset.spec, data, verdicts))
    return out


def needs_product_mask(presets: tuple[Preset, ...]) -> bool:
    """Whether any of ``presets`` uses the product's position (a crop, a cut-out or a rule):
    only then is the product reference worth loading."""
    return any(p.spec.fit != "contain" or p.checks for p in presets)


def verdicts_json(verdicts: tuple[Verdict, ...]) -> str:
    # Compact, sorted and ASCII: deterministic bytes in the XMP.
    return json.dumps(
        [v.as_dict() for v in verdicts], sort_keys=True, ensure_ascii=True, separators=(",", ":")
    )


def parse_verdicts(raw: str) -> list[dict[str, Any]]:
    """The verdicts written by verdicts_json ([] for an empty or unreadable value)."""
    try:
        parsed = json.loads(raw) if raw else []
    except json.JSONDecodeError:
        return []
    return [v for v in parsed if isinstance(v, dict)] if isinstance(parsed, list) else []


def broken_rules(derivatives: list[ChannelDerivative]) -> list[str]:
    """One reason per broken rule: channel_rule:<derivative>:<rule set>.<rule> (measured ...)."""
    return [
        f"{REASON_PREFIX}:{d.spec.name}:{v.name} (measured {v.measured}; required {v.required})"
        for d in derivatives
        for v in d.broken
    ]


def hold_for_review(job: dict[str, Any], derivatives: list[ChannelDerivative]) -> list[str]:
    """Flag ``job`` when any derivative broke a rule: its quality verdict becomes "not passed"
    with each broken rule among the reasons, which is what the publish stage holds for a
    person whatever its policy. Returns the reasons added (none: the job is left as it was)."""
    reasons = broken_rules(derivatives)
    if reasons:
        quality = job.get("quality") or {"passed": True, "scores": {}, "reasons": [], "chosen_index": 0}
        kept = [r for r in quality.get("reasons") or [] if not r.startswith(f"{REASON_PREFIX}:")]
        job["quality"] = {**quality, "passed": False, "reasons": kept + reasons}
    return reasons


def check_summary(derivatives: list[ChannelDerivative]) -> dict[str, str]:
    """Event attributes: each checked derivative's verdicts, e.g.
    {"checks.marketplace-1000": "3 passed, 0 failed", "broken_rules": "..."}."""
    attributes = {
        f"checks.{d.spec.name}": f"{len(d.verdicts) - len(d.broken)} passed, {len(d.broken)} failed"
        for d in derivatives
        if d.verdicts
    }
    broken = broken_rules(derivatives)
    if broken:
        attributes["broken_rules"] = "; ".join(broken)[:1000]
    return attributes
