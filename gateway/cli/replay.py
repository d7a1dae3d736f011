"""`lightbox replay` (jobs again from a stage, with overrides) and `lightbox compare` (two jobs
side by side: gateway/ops/compare.py)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from gateway.cli.common import Commands, settings_of
from processors.topology import JOB_STAGES


def cmd_replay(args: argparse.Namespace) -> int:
    from gateway.ops.entry import EntryError, check_id
    from gateway.ops.replay import OverrideError, ReplayError, parse_overrides, plan_replay, select_jobs, send
    from processors.eventlog.reader import EventLogError

    stage = args.stage or args.from_stage or "generate"
    pairs = list(args.set or [])
    pairs += [f"model={args.model}"] if args.model else []
    pairs += [f"backend={args.backend}"] if args.backend else []
    job_ids = [j for j in (args.job, args.job_option) if j]
    if bool(job_ids) == bool(args.where):
        print("error: name a job (JOB or --job ID) or select jobs with --where, not both", file=sys.stderr)
        return 2
    try:
        for job_id in job_ids:
            check_id(job_id, "job_id")
        for name in ("model", "backend"):
            if getattr(args, name) is not None:
                check_id(getattr(args, name), name)
        overrides = parse_overrides(pairs, stage)
    except EntryError as exc:
        print(f"error: {'JOB' if exc.field == 'job_id' else '--' + exc.field}: {exc.detail}", file=sys.stderr)
        return 2
    except OverrideError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings = settings_of(args)
    if args.where:
        try:
            job_ids = asyncio.run(select_jobs(settings, args.where, args.limit))
        except OverrideError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except EventLogError as exc:
            print(f"error: --where: {exc}", file=sys.stderr)
            return 1
        if not job_ids:
            print("no job matches --where; nothing to replay")
            return 0
    planned, failed = [], 0
    for job_id in dict.fromkeys(job_ids):
        try:
            planned.append(asyncio.run(plan_replay(settings, job_id, stage, overrides=overrides)))
        except OverrideError as exc:  # a bad value for this job (e.g. unknown template version)
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except (ReplayError, EventLogError) as exc:
            print(f"error: job {job_id}: {exc}", file=sys.stderr)
            failed += 1
    if not args.dry_run:
        try:
            send(settings, planned)
        except ReplayError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    for p in planned:
        changed = ", ".join(f"{k} {a} → {b}" for k, (a, b) in p.changed.items()) or "nothing changed"
        verb = "would re-send" if args.dry_run else "re-sent"
        print(f"job {p.job_id} ({p.source}) {verb} to {p.topic} as job {p.new_job_id}: {changed}")
    if args.dry_run:
        print(f"dry run: {len(planned)} job(s) would be replayed from {stage}; nothing was sent")
    elif len(planned) == 1:
        print(f"follow it with `lightbox status {planned[0].new_job_id}`")
    return 1 if failed else 0


def load_side(settings: Any, job_id: str) -> dict[str, Any]:
    """One job's column from the event log and storage, found as the job page finds it."""
    from gateway.ops.compare import side
    from gateway.web.jobs_api import asset_keys, presigned, published_files, stored_record
    from gateway.web.resources import presigner
    from processors.eventlog.reader import EventLogReader
    from processors.storage import ObjectStore
    from schemas.serde import AvroSerde

    timeline = asyncio.run(EventLogReader(settings).timeline(job_id))
    events = timeline["events"]
    store = ObjectStore(settings.storage)
    _, record = stored_record(store, AvroSerde("job"), job_id, events, settings.kafka.topic_prefix)
    keys = asset_keys(record, events, published_files(store, events))
    images = presigned(presigner(settings), store.bucket, keys, settings.gateway.asset_url_ttl_s)
    return side(job_id, timeline["state"], record, events, images)


def cmd_compare(args: argparse.Namespace) -> int:
    from gateway.ops.compare import comparison
    from gateway.ops.entry import EntryError, check_id
    from processors.eventlog.reader import EventLogError

    try:
        for job_id in (args.job_a, args.job_b):
            check_id(job_id, "job_id")
    except EntryError as exc:
        print(f"error: JOB: {exc.detail}", file=sys.stderr)
        return 2
    settings = settings_of(args)
    try:
        result = comparison(load_side(settings, args.job_a), load_side(settings, args.job_b))
    except EventLogError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return 0
    a, b = result["a"], result["b"]
    names = list(dict.fromkeys([*a["parameters"], *b["parameters"]]))
    print(f"{'':<16} {'A':<44} B")
    for name in names:
        print(f"{name:<16} {_cell(a['parameters'].get(name)):<44} {_cell(b['parameters'].get(name))}")
    print(f"{'state':<16} {a['state']:<44} {b['state']}")
    for name in sorted({*a["scores"], *b["scores"]}):
        print(f"{'score.' + name:<16} {_cell(a['scores'].get(name)):<44} {_cell(b['scores'].get(name))}")
    ended_a, ended_b = a["outcome"], b["outcome"]
    print(f"{'ended at':<16} {_ended(ended_a):<44} {_ended(ended_b)}")
    for label, ended in (("A", ended_a), ("B", ended_b)):
        for verdict in ended["verdicts"]:
            scores = ", ".join(f"{k} {v:.3f}" for k, v in sorted(verdict["scores"].items()))
            why = f" ({verdict['reason']})" if verdict["reason"] else ""
            print(f"{label} attempt {verdict['attempt']}: {verdict['state']}{why}  {scores}")
    for label, column in (("A", a), ("B", b)):
        for image in column["images"]:
            print(f"{label} {image['role']}: {image['key']}\n    {image['url']}")
    if result["changed"]:
        print("what changed (A → B):")
        for change in result["changed"]:
            print(f"  {change['name']}: {_cell(change['a'])} → {_cell(change['b'])}")
    else:
        print("what changed: nothing")
    return 0


def _ended(ended: dict[str, Any]) -> str:
    where = f"{ended['stage'] or '-'}/{ended['state'] or '-'}"
    return f"{where}: {ended['reason']}" if ended["reason"] else where


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def register_replay(commands: Commands) -> None:
    p = commands.add_parser(
        "replay",
        help="run jobs again from a stage, with overrides (model, backend, seed, template version)",
        description="Re-read the exact record the stage last read for each job (its offset is in the "
        "event log), apply the overrides, and send it to the stage's input topic as a new job that "
        "names the original (replay_of; lineage and the job page show both). Select jobs by id "
        "(JOB or --job) or by a condition on the events table (--where, run read-only through the "
        "analyst path, at most --limit jobs). Overrides: model, backend, seed (from generate), "
        "template_version (from references or prompt).",
    )
    p.add_argument("job", nargs="?", default=None, help="the original job's id (or use --job)")
    p.add_argument("--job", dest="job_option", default=None, help="the original job's id")
    p.add_argument(
        "--where",
        default=None,
        help="SQL condition on the events table selecting job ids, e.g. \"state = 'failed'\" (no ';')",
    )
    p.add_argument(
        "--limit", type=int, default=100, help="with --where: at most this many jobs (default 100)"
    )
    p.add_argument(
        "--stage", choices=JOB_STAGES, default=None, help="the stage to start again at (default generate)"
    )
    p.add_argument("--from-stage", choices=JOB_STAGES, default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="an override: model=, backend=, seed=, template_version= (repeatable)",
    )
    p.add_argument("--model", default=None, help="same as --set model=NAME")
    p.add_argument("--backend", default=None, help="same as --set backend=NAME")
    p.add_argument(
        "--dry-run", action="store_true", help="print what would be replayed and changed; send nothing"
    )
    p.set_defaults(func=cmd_replay)


def register_compare(commands: Commands) -> None:
    p = commands.add_parser(
        "compare",
        help="two jobs side by side: images, scores, parameters, what changed",
        description="Both jobs' parameters (model, backend, seed, sampling, template), final scores and "
        "images (storage keys and presigned URLs), and the diff of their parameters (A → B). A replay "
        "and its original are the usual pair.",
    )
    p.add_argument("job_a", metavar="JOB_A")
    p.add_argument("job_b", metavar="JOB_B")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_compare)
