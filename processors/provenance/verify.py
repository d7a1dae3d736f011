"""Verification: is a file's C2PA manifest intact, who signed it, and what lineage does it carry.

Two separate answers, as C2PA defines them:

- intact: the claim signature verifies and every hash matches (the file's bytes, XMP included,
  and each assertion): nothing changed since signing. One changed byte anywhere breaks this.
- trusted: the signer's certificate chains to one of the given trust anchors. With none given
  nothing is trusted; `lightbox verify` passes the configured anchors (or the local test CA).

``ok`` is both. The lineage and the digital source type are read from the manifest, and the
file's XMP declaration is compared with it.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from processors.provenance.manifest import ACTIONS_LABEL, LINEAGE_LABEL
from processors.provenance.source_type import term
from processors.provenance.xmp import read_xmp

# The one failure that says nothing about the file's integrity, only about whom we trust.
UNTRUSTED = "signingCredential.untrusted"


@dataclass
class Verification:
    present: bool  # the file carries a C2PA manifest store
    state: str  # c2pa's: Trusted, Valid, Invalid; or "absent", "unreadable"
    intact: bool
    trusted: bool
    failures: list[dict[str, str]] = field(default_factory=list)
    manifest_label: str = ""
    signer: dict[str, str] = field(default_factory=dict)
    claim_generator: str = ""
    digital_source_type: str = ""  # from the manifest's c2pa.created action
    xmp_digital_source_type: str = ""  # from the file's XMP
    actions: list[dict[str, Any]] = field(default_factory=list)
    lineage: dict[str, Any] | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.intact and self.trusted

    @property
    def source_types_agree(self) -> bool:
        return bool(self.digital_source_type) and self.digital_source_type == self.xmp_digital_source_type

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok, "source_types_agree": self.source_types_agree}

    def summary(self) -> dict[str, Any]:
        """The few fields a job page or `GET /v1/jobs/{id}` shows per file (the lineage is the
        job's own, shown beside it)."""
        return {
            "ok": self.ok,
            "state": self.state,
            "intact": self.intact,
            "trusted": self.trusted,
            "signer": self.signer.get("common_name", ""),
            "digital_source_type": term(self.digital_source_type or self.xmp_digital_source_type),
            "failures": [f["code"] for f in self.failures],
        }


def verify_bytes(data: bytes, mime: str | None = None, trust_anchors_pem: str | None = None) -> Verification:
    """Verify ``data`` (its format detected from the bytes when ``mime`` is None)."""
    import c2pa

    xmp_type = read_xmp(data).digital_source_type
    settings: dict[str, Any] = {"verify": {"verify_trust": bool(trust_anchors_pem)}}
    if trust_anchors_pem:
        settings["trust"] = {"trust_anchors": trust_anchors_pem}
    context = c2pa.Context(settings=c2pa.Settings.from_dict(settings))
    try:
        with c2pa.Reader(mime or "", io.BytesIO(data), context=context) as reader:
            store = json.loads(reader.json())
            results = reader.get_validation_results() or {}
            state = reader.get_validation_state() or ""
    except c2pa.C2paError as exc:
        message = str(exc)
        if (
            "ManifestNotFound" in type(exc).__name__
            or "no JUMBF" in message
            or "not found" in message.lower()
        ):
            return Verification(
                False, "absent", False, False, xmp_digital_source_type=xmp_type, error=message
            )
        # A manifest store that cannot be parsed (a changed byte inside it) is not intact.
        return Verification(True, "unreadable", False, False, xmp_digital_source_type=xmp_type, error=message)
    return _interpret(store, results, state, xmp_type)


def _interpret(store: dict[str, Any], results: dict[str, Any], state: str, xmp_type: str) -> Verification:
    label = str(store.get("active_manifest") or "")
    manifest = (store.get("manifests") or {}).get(label) or {}
    failures = [
        {"code": str(f.get("code", "")), "explanation": str(f.get("explanation", ""))}
        for f in _all_failures(store, results)
    ]
    integrity_failures = [f for f in failures if f["code"] != UNTRUSTED]
    intact = bool(manifest) and state in ("Valid", "Trusted") and not integrity_failures
    assertions = {a.get("label"): a.get("data") for a in manifest.get("assertions") or []}
    actions = _actions(assertions)
    created = next((a for a in actions if a.get("action") == "c2pa.created"), {})
    signature = manifest.get("signature_info") or {}
    generator = (manifest.get("claim_generator_info") or [{}])[0]
    return Verification(
        present=True,
        state=state or "Invalid",
        intact=intact,
        trusted=intact and state == "Trusted",
        failures=failures,
        manifest_label=label,
        signer={
            "common_name": str(signature.get("common_name", "")),
            "issuer": str(signature.get("issuer", "")),
            "alg": str(signature.get("alg", "")),
            "serial": str(signature.get("cert_serial_number", "")),
        },
        claim_generator=f"{generator.get('name', '')} {generator.get('version', '')}".strip(),
        digital_source_type=str(created.get("digitalSourceType", "")),
        xmp_digital_source_type=xmp_type,
        actions=actions,
        lineage=assertions.get(LINEAGE_LABEL),
    )


def _actions(assertions: dict[Any, Any]) -> list[dict[str, Any]]:
    # c2pa writes claim v2 actions as c2pa.actions.v2; either label may be read back.
    for label in (f"{ACTIONS_LABEL}.v2", ACTIONS_LABEL):
        data = assertions.get(label)
        if isinstance(data, dict):
            return [a for a in data.get("actions") or [] if isinstance(a, dict)]
    return []


def _all_failures(store: dict[str, Any], results: dict[str, Any]) -> list[dict[str, Any]]:
    found = list((results.get("activeManifest") or {}).get("failure") or [])
    for ingredient in results.get("ingredientDeltas") or []:
        found += (ingredient.get("validationDeltas") or {}).get("failure") or []
    # Older stores report a flat list instead of per-manifest results.
    found += [s for s in store.get("validation_status") or [] if s not in found and _is_failure(s)]
    return found


def _is_failure(status: dict[str, Any]) -> bool:
    code = str(status.get("code", ""))
    return not (code.endswith((".match", ".validated", ".trusted", ".insideValidity")) or ".skipped" in code)


def format_report(v: Verification, name: str = "") -> str:
    """What `lightbox verify` prints."""
    head = f"{name}: " if name else ""
    if not v.present:
        return f"{head}no content credentials (no C2PA manifest){_xmp_line(v)}"
    if v.state == "unreadable":
        return f"{head}NOT INTACT: the manifest store cannot be read ({v.error})"
    verdict = "OK" if v.ok else ("INTACT, SIGNER NOT TRUSTED" if v.intact else "NOT INTACT")
    lines = [
        f"{head}{verdict} ({v.state})",
        f"  signed by   {v.signer.get('common_name')} (issuer {v.signer.get('issuer')})"
        f", {v.signer.get('alg')}",
        f"  manifest    {v.manifest_label} by {v.claim_generator}",
        f"  source type {term(v.digital_source_type) or '-'}"
        + ("" if v.source_types_agree else f" (XMP says {term(v.xmp_digital_source_type) or 'nothing'})"),
    ]
    for failure in v.failures:
        lines.append(f"  failure     {failure['code']}: {failure['explanation']}")
    lines += _lineage_lines(v.lineage or {})
    return "\n".join(lines)


def _lineage_lines(lineage: dict[str, Any]) -> list[str]:
    if not lineage:
        return ["  lineage     none"]
    request = lineage.get("request") or {}
    template = lineage.get("template") or {}
    model = lineage.get("model") or {}
    quality = lineage.get("quality") or {}
    review = lineage.get("review") or {}
    params = lineage.get("parameters") or {}
    lines = [
        f"  job         {lineage.get('job_id')}"
        f" (event {request.get('event_id')}, attempt {request.get('attempt')})",
        f"  request     sku {request.get('sku')}, {request.get('asset_type')} for {request.get('channel')}"
        f" ({request.get('locale')}, {request.get('width')}x{request.get('height')})",
        f"  template    {template.get('id')}@{template.get('version')}",
        f"  model       {model.get('name')}@{model.get('version')} ({model.get('backend')} backend)",
        f"  seed        {lineage.get('seed')}",
        "  parameters  " + ", ".join(f"{k}={v}" for k, v in params.items()),
    ]
    for ref in lineage.get("references") or []:
        lines.append(f"  reference   {ref.get('role')} sha256:{ref.get('sha256')}")
    for ref in lineage.get("dropped_references") or []:
        lines.append(f"  dropped     {ref.get('role')} ({ref.get('reason')})")
    scores = ", ".join(f"{k}={v:.3f}" for k, v in (quality.get("scores") or {}).items())
    lines.append(f"  quality     {'passed' if quality.get('passed') else 'flagged'}; {scores or 'no scores'}")
    for check in lineage.get("channel_checks") or []:
        outcome = "passed" if check.get("passed") else "FAILED"
        lines.append(
            f"  check       {check.get('rule')} {outcome}: {check.get('measured')}"
            f" (required {check.get('required')})"
        )
    decision = str(review.get("decision") or "not decided").lower()
    lines.append(f"  review      {decision} by {review.get('reviewer')} at {review.get('decided_at')}")
    if "prompt" in lineage:
        lines.append(f"  prompt      {(lineage['prompt'] or {}).get('positive')}")
    return lines


def _xmp_line(v: Verification) -> str:
    return f"; XMP digital source type {term(v.xmp_digital_source_type)}" if v.xmp_digital_source_type else ""
