"""intake: catalog.events → jobs.accepted.

Validates each event (schema, meaning, policy), de-duplicates on event id with a table that
survives restarts, and fans an accepted request out into one job per asset type × channel × locale.
A rejection is a pipeline event with a machine-readable reason and the offending field.
"""

from __future__ import annotations

import time
from typing import ClassVar

from processors.intake import IntakePolicy, fan_out, validate_event
from processors.prompting import TemplateStore
from processors.runtime import Event, InputRecord, Outcome, Output, Stage
from processors.runtime.records import job_event
from processors.state.seen_table import SeenTable
from schemas.topics import Topic


class IntakeStage(Stage):
    name: ClassVar[str] = "intake"
    inputs: ClassVar[tuple[Topic, ...]] = (Topic.CATALOG_EVENTS,)
    outputs: ClassVar[tuple[Topic, ...]] = (Topic.JOBS_ACCEPTED, Topic.INTAKE_SEEN)
    # One at a time: two copies of one event in a batch must not both pass the seen check.
    concurrency: ClassVar[int] = 1

    async def start(self) -> None:
        self.policy = IntakePolicy.load()
        self.templates = TemplateStore()
        self.seen = SeenTable(self.ctx.settings, self.ctx.topics(Topic.INTAKE_SEEN))

    def partitions_assigned(self, topic: Topic, partitions: list[int]) -> None:
        if topic is Topic.CATALOG_EVENTS:
            self.seen.on_assign(partitions)

    async def before_batch(self) -> None:
        restored = await self.run_blocking(self.seen.restore_if_needed)
        if restored:
            self.ctx.log.info("restored %d seen event ids", restored)

    def _seen_elsewhere(self, key: str, record: InputRecord) -> dict | None:
        """The entry for key, unless this very message wrote it: then this is a redelivery after a
        crash between writing the entry and the jobs, and the fan-out (deterministic) is redone."""
        entry = self.seen.get(key)
        if entry is None:
            return None
        if (entry.get("source_partition"), entry.get("source_offset")) == (record.partition, record.offset):
            return None
        return entry

    async def handle(self, record: InputRecord) -> Outcome:
        event = record.value
        event_id = event["event_id"]
        if (previous := self._seen_elsewhere(f"event:{event_id}", record)) is not None:
            return Outcome(
                events=[
                    Event(
                        event_id,
                        "duplicate_event",
                        reason="duplicate_event_id",
                        detail=f"already accepted as {len(previous['job_ids'])} job(s)",
                        attributes={"job_ids": ",".join(previous["job_ids"])},
                    )
                ]
            )
        # The store is the catalogue: an unknown template and an unknown pinned version are both
        # rejected here, so fan_out's version lookup below always succeeds.
        rejections = validate_event(event, self.policy, self.templates)
        if rejections:
            first = rejections[0]
            attributes = {
                "field": first.field,
                "sku": str((event.get("product") or {}).get("sku", ""))[: self.policy.max_sku_chars],
                "all_reasons": ";".join(f"{r.reason}@{r.field}" for r in rejections)[:2000],
            }
            return Outcome(
                events=[
                    Event(
                        event_id, "rejected_event", first.reason, first.detail[:1000], attributes=attributes
                    )
                ]
            )
        accepted_at = int(time.time() * 1000)
        outcome = Outcome()
        jobs = []
        for job in fan_out(event, accepted_at, self.templates.resolve_version):
            if (earlier := self._seen_elsewhere(f"job:{job['job_id']}", record)) is not None:
                # Same sku, asset type, size, channel, locale and template version: no new work.
                outcome.events.append(
                    Event(
                        job["job_id"],
                        "duplicate_job",
                        reason="duplicate_idempotency_key",
                        detail=f"already requested by event {earlier['event_id']}",
                        attributes={"event_id": event_id, "idempotency_key": job["idempotency_key"]},
                    )
                )
                continue
            jobs.append(job)
        for key, job_ids in [(f"event:{event_id}", [j["job_id"] for j in jobs])] + [
            (f"job:{j['job_id']}", [j["job_id"]]) for j in jobs
        ]:
            seen = {
                "key": key,
                "job_ids": job_ids,
                "event_id": event_id,
                "first_seen_at": accepted_at,
                "source_partition": record.partition,
                "source_offset": record.offset,
            }
            self.seen.add(seen)
            outcome.outputs.append(Output(Topic.INTAKE_SEEN, key, seen, partition=record.partition))
        for job in jobs:
            outcome.outputs.append(Output(Topic.JOBS_ACCEPTED, job["job_id"], job))
            outcome.events.append(
                job_event(job, "pending", attributes={"event_id": event_id, "sku": job["product"]["sku"]})
            )
        return outcome
