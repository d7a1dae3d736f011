"""review and publish: assets.ready and review.decisions → assets.published.

Generation and publishing are separate states. A ready asset is approved by policy ("auto") or held
for a person ("hold"; and always when the quality gate flagged it). Held jobs wait in storage
under review/[<topic prefix>/]pending/; a decision on review.decisions approves (then
publishes) or rejects with a reason. Publishing copies the derivatives and a lineage document to
the publish prefix, under deterministic names, and notifies a webhook when one is configured.

Publishing and notifying are separate steps. Files published means a `published` event and a
record on assets.published at once, even while the webhook is down. The notification is queued
in an outbox and delivered from there (Notifier, below), with its own events: `notified` (the
attempts it took), `retry` while the receiver is down (5xx, 408, 429, unreachable),
`notify_failed` when it refuses it (another 4xx) or is given up, each with the reason.

Why an outbox of objects under notify/[<topic prefix>/] rather than a compacted topic: this stage
already keeps its review state in the same bucket (review/pending, review/decided), an entry is
written with the published files it announces (one dependency, not two, for one publish), it
survives restarts and rebalances without a changelog to restore, and a topic would mean a new
topic, schema and consumer for what is a handful of rare, small, mutable records (attempts, next
try). Each delivery has a stable id (from the job and its files): a redelivered publish queues
nothing new once the delivery has a receipt, and the receiver gets the id in a header
(X-Lightbox-Delivery) to drop the copy an at-least-once retry may still send.

Storage failures follow the one rule (processors/storage.py): a missing derivative or held job
fails the record with its reason; an outage is raised and retried (the copies are idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import aiohttp

from processors.backoff import backoff_delay
from processors.config import Settings, WebhookEndpoint
from processors.imaging import formats
from processors.provenance.signing import ContentSigner, derivative_mime
from processors.runtime import Event, InputRecord, Outcome, Output, PermanentError, Stage
from processors.runtime.keyed_locks import KeyedLocks
from processors.runtime.records import job_event, now_ms
from processors.storage import ObjectFault, ObjectStore, classify_storage_error, storage_errors
from processors.storage_keys import (
    LINEAGE_FILENAME,
    decided_key,
    handled_key,
    notify_pending_key,
    notify_pending_prefix,
    notify_receipt_key,
    pending_key,
    published_key,
    published_prefix,
)
from processors.webhooks import endpoint_for, sign
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
        formats.load_codecs()
        self.job_serde = AvroSerde("job")
        self.settings = self.ctx.settings.review
        self.topic_prefix = self.ctx.settings.kafka.topic_prefix
        self.claims = KeyedLocks()
        # Content credentials (docs/provenance.md). Signing on and no usable key: the stage refuses
        # to start rather than publish unsigned files.
        self.signer = ContentSigner.from_settings(self.ctx.settings)
        self.notifier: Notifier | None = None
        webhooks = self.ctx.settings.webhooks
        # Requests may name their own webhook only where hosts are allowed; with no endpoint of
        # any kind configured, no job can have one and the outbox is never scanned.
        if self.settings.webhook_url or webhooks.sources or webhooks.allowed_hosts:
            outbox = NotifyOutbox(self.ctx.store, self.topic_prefix)
            self.notifier = Notifier(outbox, self.ctx.settings, self.ctx.log)
            await self.notifier.start()

    async def stop(self) -> None:
        if self.notifier is not None:
            await self.notifier.stop()

    async def handle(self, record: InputRecord) -> Outcome:
        try:
            with storage_errors():
                outcome = await self._handle(record)
        except ObjectFault as exc:
            # A derivative or held job gone from storage: the record's own fault, with its reason.
            event = job_event(record.value, "failed", reason=exc.reason, detail=str(exc)[:500])
            outcome = Outcome(events=[event], dead_letter=exc)
        if self.notifier is not None:
            # Deliveries made in the background since the last record: their events travel with
            # this outcome (each names its own job).
            outcome.events.extend(self.notifier.take_events())
        return outcome

    async def _handle(self, record: InputRecord) -> Outcome:
        source = f"{record.topic.value}/{record.partition}/{record.offset}"
        if record.topic is Topic.REVIEW_DECISIONS:
            return await self._decide(record.value, source)
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
            return await self._publish(job, source)
        # Name what flagged it (a quality gate, or a channel rule such as
        # channel_rule:marketplace-1000:marketplace_main.min_product_fill (...)).
        reasons = "; ".join((job.get("quality") or {}).get("reasons") or []) or "quality gate flagged it"
        why = reasons[:1000] if flagged else "review policy is hold"
        return Outcome(
            events=[job_event(job, "in_review", reason="needs_review" if flagged else "", detail=why)]
        )

    async def _decide(self, decision: dict[str, Any], source: str) -> Outcome:
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
        return await self._publish(job, source)

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

    async def _publish(self, job: dict[str, Any], source: str) -> Outcome:
        """Copy the files, then queue the notification: the job is published once its files are,
        whatever the webhook does. The notification's own fate arrives later as events.

        Once per job: a copy of the job from another input (a redone upstream batch wrote it
        twice) publishes nothing more; the same input again (redelivered before its commit)
        redoes the same idempotent publish."""
        claim = handled_key(self.name, job["job_id"], self.topic_prefix)
        # Two copies of one job in one batch: the second waits, then finds the first's claim.
        async with self.claims.hold(claim):
            first = await self.run_blocking(self.ctx.store.claimant, claim)
            if first is not None and first != source:
                detail = f"published from {first}; this copy changes nothing"
                return Outcome(
                    events=[job_event(job, "duplicate_job", reason="already_published", detail=detail)]
                )
            prefix = published_prefix(self.settings.publish_prefix, job)
            keys = await self.run_blocking(self._copy_all, job)
            await self.run_blocking(self.ctx.store.claim, claim, source)
        job["published_keys"] = keys
        reviewer = job["review"]["reviewer"]
        approved = job_event(job, "approved", attributes={"reviewer": reviewer})
        published = job_event(job, "published", attributes={"prefix": prefix, "files": str(len(keys))})
        events = [approved, published]
        if self.notifier is not None and self.notifier.endpoint(job) is not None:
            delivery = Delivery.of(job, self.notifier.owner)
            if await self.run_blocking(self.notifier.outbox.queue, delivery):
                events.extend(await self.notifier.first_try(delivery))
        return Outcome(outputs=[Output(Topic.ASSETS_PUBLISHED, job["job_id"], job)], events=events)

    def _copy_all(self, job: dict[str, Any]) -> list[str]:
        store = self.ctx.store
        keys = []
        for derivative in job["derivatives"]:
            dest = published_key(self.settings.publish_prefix, job, derivative["key"].rsplit("/", 1)[-1])
            if self.signer is None:
                store.copy(derivative["key"], dest)
            else:
                # The file's last step: its manifest records the approval, and nothing re-encodes it.
                signed = self.signer.sign_derivative(store.get_bytes(derivative["key"]), job, derivative)
                mime = derivative_mime(derivative["format"])
                store.put_bytes(dest, signed, mime, {"job-id": job["job_id"]})
            keys.append(dest)
        lineage_key = published_key(self.settings.publish_prefix, job, LINEAGE_FILENAME)
        document = {k: v for k, v in job.items() if k != "source_references"}
        store.put_bytes(lineage_key, json.dumps(document, default=str, indent=2).encode(), "application/json")
        keys.append(lineage_key)
        return keys


# -- notifications ----------------------------------------------------------------------------

DELIVERY_NAMESPACE = uuid.UUID("0c7d5a70-6a49-4d0e-9a43-6f8e8f1d2b7e")
DELIVERY_HEADER = "X-Lightbox-Delivery"
# The receiver is down for these: try again later. Any other 4xx (or an unfollowed 3xx) refuses
# this body for good.
RETRYABLE_STATUS = frozenset({408, 425, 429})


@dataclass
class Delivery:
    """One notification in the outbox, with how its tries went so far."""

    delivery_id: str
    job_id: str
    job_attempt: int
    submitted_at: int | None  # epoch ms, for the events
    body: dict[str, Any]
    queued_at: int  # epoch ms
    owner: str  # the publish process that tries it
    source: str = ""  # the request's source and its own webhook URL: pick the endpoint
    request_url: str = ""
    attempts: int = 0
    last_reason: str = ""
    next_at: int = 0  # epoch ms of the next try
    touched_at: int = 0  # epoch ms of the last try (an entry untouched for long lost its owner)
    # Finished (outcome, status) but its receipt not written yet (storage was down): only the
    # receipt is retried, the notification is never sent again.
    unrecorded: tuple[str, int | None] | None = field(default=None, compare=False)

    @classmethod
    def of(cls, job: dict[str, Any], owner: str) -> Delivery:
        files = sorted(job["published_keys"])
        delivery_id = str(uuid.uuid5(DELIVERY_NAMESPACE, json.dumps([job["job_id"], files])))
        submitted = job.get("submitted_at")
        return cls(
            delivery_id=delivery_id,
            job_id=job["job_id"],
            job_attempt=int(job.get("attempt") or 0),
            submitted_at=int(submitted.timestamp() * 1000) if hasattr(submitted, "timestamp") else submitted,
            body={
                "delivery_id": delivery_id,
                "job_id": job["job_id"],
                "sku": job["product"]["sku"],
                "files": files,
            },
            queued_at=now_ms(),
            owner=owner,
            source=job.get("source") or "",
            request_url=job.get("webhook_url") or "",
        )

    def to_json(self) -> bytes:
        document = asdict(self)
        document.pop("unrecorded")
        return json.dumps(document, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Delivery:
        return cls(**json.loads(raw))

    def event_fields(self, **attributes: str) -> dict[str, Any]:
        """What every event about this delivery carries besides its job, state and reason."""
        return {
            "attempt": self.job_attempt,
            "attributes": {"delivery_id": self.delivery_id, "attempts": str(self.attempts), **attributes},
            "submitted_at": self.submitted_at,
            "discriminator": f"{self.delivery_id}/{self.attempts}",
        }


class NotifyOutbox:
    """The outbox's storage: pending entries and receipts, per topic prefix. Blocking calls."""

    def __init__(self, store: ObjectStore, topic_prefix: str) -> None:
        self.store = store
        self.topic_prefix = topic_prefix

    def queue(self, delivery: Delivery) -> bool:
        """Put the entry unless the delivery is already queued or done (a redelivered publish)."""
        if self.store.exists(notify_receipt_key(delivery.delivery_id, self.topic_prefix)):
            return False
        pending = notify_pending_key(delivery.delivery_id, self.topic_prefix)
        if self.store.exists(pending):
            return False
        self.save(delivery)
        return True

    def save(self, delivery: Delivery) -> None:
        key = notify_pending_key(delivery.delivery_id, self.topic_prefix)
        self.store.put_bytes(key, delivery.to_json(), "application/json")

    def pending(self) -> list[Delivery]:
        entries = []
        for key in self.store.list_keys(notify_pending_prefix(self.topic_prefix)):
            with contextlib.suppress(Exception):  # gone since the listing, or unreadable: next scan
                entries.append(Delivery.from_json(self.store.get_bytes(key)))
        return entries

    def finish(self, delivery: Delivery, outcome: str, status: int | None) -> None:
        """The receipt first, then the entry goes: a crash in between leaves a receipt, and the
        entry it left behind is dropped, not sent, by whoever finds it."""
        receipt = {
            "delivery_id": delivery.delivery_id,
            "job_id": delivery.job_id,
            "outcome": outcome,
            "status": status,
            "attempts": delivery.attempts,
            "reason": delivery.last_reason,
            "at": now_ms(),
        }
        key = notify_receipt_key(delivery.delivery_id, self.topic_prefix)
        self.store.put_bytes(key, json.dumps(receipt, sort_keys=True).encode(), "application/json")
        self.drop(delivery)

    def drop(self, delivery: Delivery) -> None:
        self.store.delete(notify_pending_key(delivery.delivery_id, self.topic_prefix))

    def is_done(self, delivery: Delivery) -> bool:
        return self.store.exists(notify_receipt_key(delivery.delivery_id, self.topic_prefix))


@dataclass(frozen=True)
class Sent:
    """How one POST went."""

    accepted: bool
    status: int | None
    reason: str = ""  # webhook_<status> or webhook_unreachable
    final: bool = False  # refused for good: no retry can help


async def post_webhook(
    session: aiohttp.ClientSession, endpoint: WebhookEndpoint, delivery: Delivery, timeout_s: float
) -> Sent:
    """One POST, signed the Standard Webhooks way when the endpoint has a secret: webhook-id is
    the delivery id, the same on every try, so the receiver de-duplicates on it."""
    body = json.dumps(delivery.body, sort_keys=True, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        DELIVERY_HEADER: delivery.delivery_id,
        "Idempotency-Key": delivery.delivery_id,
    }
    if endpoint.secret:
        headers.update(sign(endpoint.secret, delivery.delivery_id, int(time.time()), body))
    try:
        async with session.post(
            endpoint.url,
            data=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            # A redirect would replay this signed POST to wherever Location points, past the
            # host allowlist intake checked: a 3xx is the receiver's refusal, never followed.
            allow_redirects=False,
        ) as response:
            status = response.status
    except (aiohttp.ClientError, TimeoutError):
        return Sent(False, None, "webhook_unreachable")
    if 200 <= status < 300:
        return Sent(True, status)
    retry = status >= 500 or status in RETRYABLE_STATUS
    return Sent(False, status, f"webhook_{status}", final=not retry)


def _worker_id() -> str:
    # Stable across restarts of one container (pid 1, same hostname): a restarted publish
    # process picks its own entries up at once; another host's waits for notify_adopt_after_s.
    return f"{socket.gethostname()}:{os.getpid()}"


class Notifier:
    """Delivers the outbox: one try right after the publish that queued it, then tries with
    capped exponential backoff in a background task, until the receiver accepts it, refuses it,
    or notify_give_up_after_s passes. Entries of a publish process that stopped trying (it
    died) are taken over after notify_adopt_after_s.

    The events of background tries wait in take_events() until the stage returns its next
    outcome: a stage has no other way to emit events (processors.runtime sends them with a
    record's outcome), so a delivery made while no record arrives is reported with the next."""

    def __init__(self, outbox: NotifyOutbox, settings: Settings, log: logging.Logger) -> None:
        self.outbox = outbox
        self.all_settings = settings
        self.settings = settings.review
        self.log = log
        self.owner = _worker_id()
        self._mine: dict[str, Delivery] = {}
        self._in_flight: set[str] = set()
        self._events: list[Event] = []
        self._receiver_down = False
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._next_scan = 0.0

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        self._task = asyncio.create_task(self._run(), name="notify-outbox")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()

    def endpoint(self, job: dict[str, Any]) -> WebhookEndpoint | None:
        return endpoint_for(self.all_settings, job.get("source"), job.get("webhook_url"))

    def take_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    async def first_try(self, delivery: Delivery) -> list[Event]:
        """Try a just-queued delivery now, unless the receiver is known to be down (then the
        background loop tries it with the others, without holding up the publish)."""
        self._mine[delivery.delivery_id] = delivery
        if self._receiver_down:
            return []
        event = await self._try(delivery)
        return [event] if event is not None else []

    # -- the background loop ---------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await self._round()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # storage down for the scan: the entries wait, nothing is lost
                classified = classify_storage_error(exc) or exc
                self.log.warning("notification outbox round failed: %s", classified)
            await asyncio.sleep(self.settings.notify_poll_s)

    async def _round(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() >= self._next_scan:
            # Now and then (and first at start): entries this process does not hold yet, its own
            # from before a restart and those of a process that stopped trying.
            self._next_scan = loop.time() + max(
                self.settings.notify_poll_s, self.settings.notify_adopt_after_s / 4
            )
            await self._adopt(await asyncio.to_thread(self.outbox.pending))
        now = now_ms()
        for delivery in list(self._mine.values()):
            if delivery.unrecorded is not None or delivery.next_at <= now:
                event = await self._try(delivery)
                if event is not None:
                    self._events.append(event)

    async def _adopt(self, entries: list[Delivery]) -> None:
        settings = self.settings
        # A live owner touches its entries at least once per longest backoff (plus a POST): an
        # entry untouched for longer than that, and than the setting, has lost its owner.
        after_s = max(
            settings.notify_adopt_after_s, 2 * (settings.notify_backoff_max_s + settings.notify_timeout_s)
        )
        stale_before = now_ms() - int(after_s * 1000)
        for entry in entries:
            if entry.delivery_id in self._mine:
                continue
            if entry.owner == self.owner or max(entry.touched_at, entry.queued_at) < stale_before:
                entry.owner = self.owner
                entry.touched_at = now_ms()
                await asyncio.to_thread(self.outbox.save, entry)
                self._mine[entry.delivery_id] = entry

    # -- one try ---------------------------------------------------------------------------

    async def _try(self, delivery: Delivery) -> Event | None:
        """One try; the event it leads to (None: nothing worth an event, e.g. a repeated retry)."""
        if delivery.delivery_id in self._in_flight:
            return None
        self._in_flight.add(delivery.delivery_id)
        try:
            return await self._try_once(delivery)
        except Exception as exc:
            # Storage failed while recording the try: the entry stays, the next round goes on.
            self.log.warning("notification %s: %s", delivery.delivery_id, classify_storage_error(exc) or exc)
            return None
        finally:
            self._in_flight.discard(delivery.delivery_id)

    async def _try_once(self, delivery: Delivery) -> Event | None:
        if delivery.unrecorded is not None:  # finished earlier; only its receipt is to be written
            await self._finish(delivery, *delivery.unrecorded)
            return None
        if await asyncio.to_thread(self.outbox.is_done, delivery):
            # Finished before (the receipt is there, the entry was left behind): never sent twice.
            await asyncio.to_thread(self.outbox.drop, delivery)
            self._mine.pop(delivery.delivery_id, None)
            return None
        assert self._session is not None
        delivery.attempts += 1
        delivery.touched_at = now_ms()
        endpoint = endpoint_for(self.all_settings, delivery.source, delivery.request_url)
        if endpoint is None:
            # Configuration changed since it was queued: nowhere to send it, said once, for good.
            sent = Sent(False, None, "webhook_not_configured", final=True)
        else:
            sent = await post_webhook(self._session, endpoint, delivery, self.settings.notify_timeout_s)
        if sent.accepted:
            self._receiver_down = False
            delivery.last_reason = ""
            await self._finish(delivery, "delivered", sent.status)
            return Event(delivery.job_id, "notified", **delivery.event_fields(status=str(sent.status)))
        delivery.last_reason = sent.reason
        waited_s = (now_ms() - delivery.queued_at) / 1000
        if sent.final or waited_s >= self.settings.notify_give_up_after_s:
            why = (
                f"the webhook refused it ({sent.reason})"
                if sent.final
                else f"given up after {delivery.attempts} tries over {waited_s:.0f}s ({sent.reason})"
            )
            await self._finish(delivery, "refused" if sent.final else "gave_up", sent.status)
            detail = f"{why}; the files stay published"
            return Event(
                delivery.job_id, "notify_failed", reason=sent.reason, detail=detail, **delivery.event_fields()
            )
        self._receiver_down = True
        settings = self.settings
        delay = backoff_delay(
            delivery.attempts, settings.notify_backoff_initial_s, settings.notify_backoff_max_s
        )
        delivery.next_at = now_ms() + int(delay * 1000)
        await asyncio.to_thread(self.outbox.save, delivery)
        # One retry event per doubling of the tries (1, 2, 4, 8, ...): a receiver down for a day
        # is visible without thousands of events per job.
        if delivery.attempts & (delivery.attempts - 1):
            return None
        detail = f"notification not delivered; next try in {delay:.1f}s"
        return Event(
            delivery.job_id,
            "retry",
            reason=sent.reason,
            detail=detail,
            **delivery.event_fields(step="notify"),
        )

    async def _finish(self, delivery: Delivery, outcome: str, status: int | None) -> None:
        """Write the receipt; if storage fails, remember it so that only the receipt is retried."""
        delivery.unrecorded = (outcome, status)
        try:
            await asyncio.to_thread(self.outbox.finish, delivery, outcome, status)
        except Exception as exc:
            self.log.warning("receipt of notification %s not written yet: %s", delivery.delivery_id, exc)
            self._mine[delivery.delivery_id] = delivery
            return
        self._mine.pop(delivery.delivery_id, None)
