"""review and publish: assets.ready and review.decisions → assets.published.

Generation and publishing are separate states. A ready asset is approved by policy ("auto") or held
for a person ("hold"; and always when the quality gate flagged it). Held jobs wait in storage
under review/[<topic prefix>/]pending/; a decision on review.decisions approves (then
publishes) or rejects with a reason. Publishing copies the derivatives and a lineage document to
the publish prefix, under deterministic names, and notifies a webhook when one is configured.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, ClassVar

import aiohttp

from processors.runtime import InputRecord, Outcome, Output, PermanentError, Stage, TransientError
from processors.runtime.records import job_event
from processors.storage_keys import (
    LINEAGE_FILENAME,
    decided_key,
    pending_key,
    published_key,
    published_prefix,
)
from schemas.serde import AvroSerde
from schemas.topics import Topic


def _same_review(stored: dict[str, Any], incoming: dict[str, Any]) -> bool:
    """Equal decisions, whatever form decided_at took (a datetime after decoding, epoch ms before)."""

    def millis(value: Any) -> int:
        return int(value.timestamp() * 1000) if hasattr(value, "timestamp") else int(value)

    keys = ("decision", "reviewer", "reason")
    return all(stored[k] == incoming[k] for k in keys) and millis(stored["decided_at"]) == millis(
        incoming["decided_at"]
    )


class PublishStage(Stage):
    name: ClassVar[str] = "publish"
    inputs: ClassVar[tuple[Topic, ...]] = (Topic.ASSETS_READY, Topic.REVIEW_DECISIONS)
    outputs: ClassVar[tuple[Topic, ...]] = (Topic.ASSETS_PUBLISHED,)
    # One record's storage work at a time. The records of a batch are handled concurrently, and
    # deciding is check-then-write (is there a decided/ record? no: write ours): an APPROVE and a
    # REJECT for one job in the same batch would both find none and both take effect. With one
    # run_blocking call at a time, each decision's check and write run whole, in offset order,
    # and the first decision wins. Decisions are rare and small; publishing copies are cheap.
    concurrency: ClassVar[int] = 1

    async def start(self) -> None:
        self.job_serde = AvroSerde("job")
        self.settings = self.ctx.settings.review
        self.topic_prefix = self.ctx.settings.kafka.topic_prefix

    async def handle(self, record: InputRecord) -> Outcome:
        if record.topic is Topic.REVIEW_DECISIONS:
            return await self._decide(record.value)
        job = record.value
        flagged = not (job.get("quality") or {}).get("passed", False)
        hold = not (self.settings.policy == "auto" and not flagged)
        # A redelivered assets.ready (at least once) for a job a reviewer already decided must not
        # put it back in the queue, nor publish what was rejected: the decision stands.
        decided = await self.run_blocking(self._decided_or_hold, job, hold)
        if decided is not None:
            first = decided["review"] or {}
            return Outcome(
                events=[
                    job_event(
                        job,
                        "already_decided",
                        reason="redelivered_after_decision",
                        detail=f"{str(first.get('decision', '')).lower()} by {first.get('reviewer')} stands",
                    )
                ]
            )
        if not hold:
            job["review"] = {
                "decision": "APPROVE",
                "reviewer": "policy:auto",
                "reason": "auto-approve policy",
                "decided_at": dt.datetime.now(dt.UTC),
            }
            return await self._publish(job)
        why = "quality gate flagged it" if flagged else "review policy is hold"
        return Outcome(
            events=[job_event(job, "in_review", reason="needs_review" if flagged else "", detail=why)]
        )

    async def _decide(self, decision: dict[str, Any]) -> Outcome:
        """Apply a reviewer's decision once. The job moves from review/pending/ to review/decided/
        with the decision on it; a redelivery of the same decision (at-least-once) redoes the same
        idempotent effects; a different, later decision is recorded and ignored: the first wins,
        so an approval can never publish an asset someone already rejected."""
        job_id = decision["job_id"]
        review = {
            "decision": decision["decision"],
            "reviewer": decision["reviewer"],
            "reason": decision["reason"],
            "decided_at": decision["decided_at"],
        }
        job = await self.run_blocking(self._take_for_decision, job_id, review)
        if not _same_review(job["review"], review):
            first = job["review"]
            return Outcome(
                events=[
                    job_event(
                        job,
                        "decision_ignored",
                        reason="already_decided",
                        detail=f"{first['decision'].lower()} by {first['reviewer']} came first",
                        attributes={"reviewer": decision["reviewer"], "decision": decision["decision"]},
                    )
                ]
            )
        if decision["decision"] == "REJECT":
            return Outcome(
                events=[
                    job_event(
                        job,
                        "rejected",
                        reason="reviewer_rejected",
                        detail=decision["reason"],
                        attributes={"reviewer": decision["reviewer"]},
                    )
                ]
            )
        return await self._publish(job)

    def _decided_or_hold(self, job: dict[str, Any], hold: bool) -> dict[str, Any] | None:
        """The decided job if a decision was recorded for it; otherwise None, after parking the
        job under review/pending/ when it is to be held. One blocking call: with concurrency 1
        no decision lands between the check and the write."""
        store = self.ctx.store
        decided = decided_key(job["job_id"], self.topic_prefix)
        if store.exists(decided):
            return self.job_serde.decode(store.get_bytes(decided))
        if hold:
            store.put_bytes(
                pending_key(job["job_id"], self.topic_prefix), self.job_serde.encode(job), "avro/binary"
            )
        return None

    def _take_for_decision(self, job_id: str, review: dict[str, Any]) -> dict[str, Any]:
        """The job as decided: the first decision recorded under review/decided/, made now if the
        job is still pending."""
        store = self.ctx.store
        decided = decided_key(job_id, self.topic_prefix)
        if store.exists(decided):
            return self.job_serde.decode(store.get_bytes(decided))
        pending = pending_key(job_id, self.topic_prefix)
        if not store.exists(pending):
            raise PermanentError(f"no job {job_id} is waiting for review")
        job = self.job_serde.decode(store.get_bytes(pending))
        job["review"] = review
        # Decided first, then no longer pending: a crash in between leaves it decided, and the
        # redelivered decision finds it there.
        store.put_bytes(decided, self.job_serde.encode(job), "avro/binary")
        store.delete(pending)
        return job

    async def _publish(self, job: dict[str, Any]) -> Outcome:
        prefix = published_prefix(self.settings.publish_prefix, job)
        keys = await self.run_blocking(self._copy_all, job)
        job["published_keys"] = keys
        refused = await self._notify(job) if self.settings.webhook_url else None
        reviewer = job["review"]["reviewer"]
        approved = job_event(job, "approved", attributes={"reviewer": reviewer})
        published = job_event(job, "published", attributes={"prefix": prefix, "files": str(len(keys))})
        events = [approved, published]
        if refused is not None:
            # The files are published whatever the webhook thinks; a refused notification is its
            # own failure, recorded for whoever owns the receiver, and never a dead letter.
            events.append(
                job_event(
                    job,
                    "notify_failed",
                    reason=f"webhook_{refused}",
                    detail=f"webhook answered {refused}; the files are published under {prefix}",
                )
            )
        return Outcome(outputs=[Output(Topic.ASSETS_PUBLISHED, job["job_id"], job)], events=events)

    def _copy_all(self, job: dict[str, Any]) -> list[str]:
        store = self.ctx.store
        keys = []
        for derivative in job["derivatives"]:
            dest = published_key(self.settings.publish_prefix, job, derivative["key"].rsplit("/", 1)[-1])
            store.copy(derivative["key"], dest)
            keys.append(dest)
        lineage_key = published_key(self.settings.publish_prefix, job, LINEAGE_FILENAME)
        document = {k: v for k, v in job.items() if k != "source_references"}
        store.put_bytes(lineage_key, json.dumps(document, default=str, indent=2).encode(), "application/json")
        keys.append(lineage_key)
        return keys

    async def _notify(self, job: dict[str, Any]) -> int | None:
        """POST the notification. None when accepted; the status when the receiver refused it
        (4xx: retrying the same body will not help). 5xx and connection errors are transient:
        retried, which redoes the (idempotent) copies."""
        body = {"job_id": job["job_id"], "sku": job["product"]["sku"], "files": job["published_keys"]}
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
                session.post(self.settings.webhook_url, json=body) as response,
            ):
                if response.status >= 500:
                    raise TransientError(f"webhook answered {response.status}")
                if response.status >= 400:
                    return response.status
                return None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientError(f"webhook unreachable: {exc!r}") from exc
