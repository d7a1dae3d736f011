"""Two jobs side by side (a replay and its original, or any two): their parameters, scores and
images, and what changed between them. The one home of "what changed": `lightbox compare`, the
replay tool's dry run and the job page's side-by-side view (gateway/web/jobpage.py) all use
changes() / changed_names().
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def parameters(job: Mapping[str, Any] | None) -> dict[str, Any]:
    """What decides a job's images, flat: the model and backend that served it (else the route's
    choice), seed and sampling, size, template, the routing rule, what it replays."""
    job = job or {}
    route = job.get("route") or {}
    params = route.get("params") or {}
    generation = job.get("generation") or {}
    prompt = job.get("prompt") or {}
    spec = job.get("spec") or {}
    template_version = prompt.get("template_version") or spec.get("template_version")
    return {
        "job_id": job.get("job_id"),
        "replay_of": job.get("replay_of"),
        "model": generation.get("model") or route.get("model"),
        "model_version": generation.get("model_version"),
        "backend": generation.get("backend") or route.get("backend"),
        "routed_model": route.get("model"),
        "rule": route.get("rule_id"),
        "fell_back_from": generation.get("fell_back_from"),
        "seed": generation.get("seed", params.get("seed")),
        "sampler": generation.get("sampler", params.get("sampler")),
        "steps": generation.get("steps", params.get("steps")),
        "guidance": generation.get("guidance", params.get("guidance")),
        "size": f"{generation['width']}x{generation['height']}" if generation.get("width") else None,
        "template": f"{spec.get('template_id') or prompt.get('template_id')}@{template_version or 'latest'}"
        if spec or prompt
        else None,
        "variants": spec.get("variants"),
        "attempt": job.get("attempt"),
    }


def parameters_from_events(job_id: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    """What the event log says decided a job's images, for a job with no stored record (it
    failed, was rejected or is still on its way): the keys of parameters(), the ones the events
    do not carry left None. The latest generation's attributes win over the prompt's route."""
    found: dict[str, Any] = dict.fromkeys(parameters(None), None)
    found["job_id"] = job_id
    for event in events:
        attributes = event.get("attributes") or {}
        stage, state = event.get("stage"), event.get("state")
        if stage == "prompt" and attributes.get("template"):
            found["template"] = attributes["template"]
        if stage in ("prompt", "generate"):
            for name in ("model", "backend"):
                if attributes.get(name):
                    found[name] = attributes[name]
            if stage == "prompt" and attributes.get("model"):
                found["routed_model"] = attributes["model"]
        if stage == "generate" and state == "running":
            found["fell_back_from"] = attributes.get("fell_back_from")
        if attributes.get("replay_of"):
            found["replay_of"] = attributes["replay_of"]
        if stage == "quality" and attributes.get("variants"):
            found["variants"] = attributes["variants"]
        found["attempt"] = max(int(event.get("attempt") or 0), found["attempt"] or 0)
    return found


def outcome(events: list[dict[str, Any]]) -> dict[str, Any]:
    """How the job ended (or where it is): the last event's stage, state and reason, and every
    quality verdict, one an attempt, with its reason and scores: for a job that never published
    this is what there is to compare."""
    last = events[-1] if events else {}
    verdicts = [
        {
            "attempt": int(event.get("attempt") or 0),
            "state": event.get("state"),
            "reason": event.get("reason") or None,
            "scores": _scores_of(event),
        }
        for event in events
        if event.get("stage") == "quality" and _scores_of(event)
    ]
    failure = next((e for e in reversed(events) if e.get("state") in ("failed", "rejected")), None)
    return {
        "stage": last.get("stage"),
        "state": last.get("state"),
        "reason": (failure or {}).get("reason") or last.get("reason") or None,
        "detail": (failure or {}).get("detail") or None,
        "verdicts": verdicts,
    }


def _scores_of(event: Mapping[str, Any]) -> dict[str, float]:
    attributes = event.get("attributes") or {}
    return {k.removeprefix("score."): float(v) for k, v in attributes.items() if k.startswith("score.")}


def _same(a: Any, b: Any) -> bool:
    # A seed recorded as "7" by the route and 7 by the generator is the same seed.
    return a == b or (a is not None and b is not None and str(a) == str(b))


def changed_names(a: Mapping[str, Any], b: Mapping[str, Any]) -> set[str]:
    """Names whose values differ between the two (a name only one side has differs too)."""
    return {name for name in {*a, *b} if not _same(a.get(name), b.get(name))}


def changes(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The diff of two parameter sets, in a's order then b's: [{"name", "a", "b"}]."""
    differing = changed_names(a, b)
    names = [*a, *(name for name in b if name not in a)]
    return [{"name": name, "a": a.get(name), "b": b.get(name)} for name in names if name in differing]


def final_scores(events: list[dict[str, Any]], record: Mapping[str, Any] | None) -> dict[str, float]:
    """The scores of the job's kept result: the stored record's verdict, else the last quality
    event that carried scores."""
    quality = (record or {}).get("quality") or {}
    if quality.get("scores"):
        return {k: float(v) for k, v in quality["scores"].items()}
    for event in reversed(events):
        scores = _scores_of(event)
        if event.get("stage") == "quality" and scores:
            return scores
    return {}


def side(
    job_id: str,
    state: str,
    record: Mapping[str, Any] | None,
    events: list[dict[str, Any]],
    images: list[dict[str, Any]],
) -> dict[str, Any]:
    """One job's column: state, parameters (the stored record's, else the event log's), scores,
    how it ended, images ({role, key[, url]})."""
    return {
        "job_id": job_id,
        "state": state,
        "parameters": parameters(record) if record else parameters_from_events(job_id, events),
        "scores": final_scores(events, record),
        "outcome": outcome(events),
        "images": images,
        "record_stored": record is not None,
    }


def _comparable(column: Mapping[str, Any]) -> dict[str, Any]:
    ended = column.get("outcome") or {}
    return {
        **column["parameters"],
        **{f"score.{k}": v for k, v in column["scores"].items()},
        "outcome.state": column.get("state"),
        "outcome.reason": ended.get("reason"),
        "outcome.attempts": len(ended.get("verdicts") or []),
    }


def comparison(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Both sides and what changed: parameters, then scores (as `score.<name>`)."""
    left, right = _comparable(a), _comparable(b)
    related = (
        b["parameters"].get("replay_of") == a["job_id"] or a["parameters"].get("replay_of") == b["job_id"]
    )
    return {
        "a": a,
        "b": b,
        "replay": related,
        "changed": [c for c in changes(left, right) if c["name"] != "job_id"],
    }
