"""`lightbox schemas check|register`: the working tree's schemas against the registry.

check tells, per subject, which committed versions are not registered yet and whether the
registry would accept them under the subject's rule; register sets the rule (settings:
registry.compatibility, BACKWARD by default) and registers them oldest first, so registry
version N is file vN. register changes nothing when any subject fails the check, and the registry
enforces the rule itself as well, so a change that slips past the check (another writer racing
us) is still refused with the registry's message.

Limits, said here once: a pending version is checked against the latest *registered* one (and
against all of them under a _TRANSITIVE rule, by the registry), so when two new versions of one
schema are pending, the second is checked against the registry's latest, not against the first;
register still refuses it if the registry's rule does.

    python -m schemas.compat check|register|unregister    (the same functions `lightbox schemas` runs)
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from processors.config import Settings, load_settings
from schemas.registry import AVRO_DIR
from schemas.registry_client import (
    SCHEMA_NOT_FOUND,
    SUBJECT_NOT_FOUND,
    RegistryUnavailableError,
    SchemaFile,
    describe,
    is_not_found,
    make_client,
    native_api_url,
    subjects,
)

# Loopback and in-cluster registries are never reached through an HTTP(S)_PROXY.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class SubjectReport:
    subject: str
    schema: str
    # Registry versions of the subject before this call.
    registered: list[int]
    # Committed versions not registered yet, oldest first (labels such as job.v2).
    pending: list[str]
    # The subject's rule as the registry reports it (None: none of its own, the global default).
    rule: str | None
    # Why the subject is not acceptable: the registry's messages, or a file changed in place.
    problems: list[str] = field(default_factory=list)
    # register only: the versions this call registered.
    registered_now: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class CompatibilityError(RuntimeError):
    """register refused: at least one subject's pending versions are not acceptable."""

    def __init__(self, reports: list[SubjectReport]) -> None:
        self.reports = reports
        bad = [r for r in reports if not r.ok]
        lines = [f"{r.subject}: {problem}" for r in bad for problem in r.problems]
        done = [f"{r.subject} ({', '.join(r.registered_now)})" for r in reports if r.registered_now]
        # The check refuses before anything is registered; only the registry itself, refusing
        # mid-way (a brand-new subject's later version, a concurrent writer), leaves some done.
        outcome = "registered before the refusal: " + "; ".join(done) if done else "nothing changed"
        super().__init__(f"schemas not registered, {outcome}:\n  " + "\n  ".join(lines))


def check(settings: Settings, root: Path = AVRO_DIR) -> list[SubjectReport]:
    """One report per topic subject under settings.kafka.topic_prefix; changes nothing. root is
    the schema tree (tests pass a modified copy)."""
    return _check_all(make_client(settings.registry), settings, root)


def register(
    settings: Settings, progress: Callable[[str], None] | None = None, root: Path = AVRO_DIR
) -> list[SubjectReport]:
    """Set every subject's rule and register its pending versions, oldest first. Idempotent.
    Raises CompatibilityError when any subject fails the check (nothing registered then) or the
    registry refuses a version (its message; what was registered before is listed), and
    RegistryUnavailableError when the registry cannot be reached."""
    client = make_client(settings.registry)
    reports = _check_all(client, settings, root)
    if any(not r.ok for r in reports):
        raise CompatibilityError(reports)
    files_of = {subject: files for _, subject, files in subjects(settings.kafka.topic_prefix, root)}
    level = settings.registry.compatibility
    for report in reports:
        # The rule goes first, so it already guards the versions registered next (the registry
        # keeps a subject's rule even before the subject has a version).
        if report.rule != level:
            try:
                client.set_compatibility(report.subject, level)
            except Exception as exc:
                raise _unavailable(settings, report.subject, exc) from exc
            report.rule = level
        for file in files_of[report.subject]:
            if file.label not in report.pending:
                continue
            try:
                client.register_schema(report.subject, Schema(file.text, "AVRO"))
            except SchemaRegistryError as exc:
                if exc.http_status_code in (409, 422):
                    report.problems.append(f"{file.path} refused by the registry: {exc.error_message}")
                    raise CompatibilityError(reports) from exc
                raise _unavailable(settings, report.subject, exc) from exc
            except Exception as exc:  # httpx transport errors: the registry is not answering
                raise _unavailable(settings, report.subject, exc) from exc
            report.registered_now.append(file.label)
        if report.registered_now and progress is not None:
            progress(f"registry: {report.subject}: registered {', '.join(report.registered_now)}")
    return reports


def unregister(settings: Settings) -> list[str]:
    """Delete (permanently) every subject under the prefix: for test sessions and benchmarks
    that made subjects of their own. Returns the subjects that existed."""
    client = make_client(settings.registry)
    deleted = []
    for _, subject, _ in subjects(settings.kafka.topic_prefix):
        found = False
        # A subject is soft-deleted first, as the API requires; one left soft-deleted by an
        # interrupted run only needs the permanent step.
        for permanent in (False, True):
            try:
                client.delete_subject(subject, permanent=permanent)
                found = True
            except SchemaRegistryError as exc:
                if exc.http_status_code != 404:
                    raise _unavailable(settings, subject, exc) from exc
            except Exception as exc:
                raise _unavailable(settings, subject, exc) from exc
        if found:
            deleted.append(subject)
    return deleted


# --- one subject ---------------------------------------------------------------------------


def _check_all(client: SchemaRegistryClient, settings: Settings, root: Path) -> list[SubjectReport]:
    return [
        _check_subject(client, settings, subject, files)
        for _, subject, files in subjects(settings.kafka.topic_prefix, root)
    ]


def _check_subject(
    client: SchemaRegistryClient, settings: Settings, subject: str, files: Sequence[SchemaFile]
) -> SubjectReport:
    try:
        versions = sorted(client.get_versions(subject))
    except SchemaRegistryError as exc:
        if not is_not_found(exc, SUBJECT_NOT_FOUND):
            raise _unavailable(settings, subject, exc) from exc
        versions = []
    except Exception as exc:
        raise _unavailable(settings, subject, exc) from exc
    report = SubjectReport(subject, files[0].name, versions, [], _rule(client, settings, subject))
    for file in files:
        if versions and _registered_version(client, settings, subject, file) is not None:
            continue
        report.pending.append(file.label)
        if file.version <= len(versions):
            # Registered in order, file vN is registry version N: a vN the registry does not
            # know although it has N versions was edited after it was registered.
            report.problems.append(
                f"{file.path} is not what the registry holds as version {file.version} of "
                f"{subject}: a registered schema must never change; put the change in "
                f"v{files[-1].version + 1}.avsc"
            )
    if not versions or report.problems:
        return report  # a new subject accepts its first version under any rule
    for label in report.pending:
        file = next(f for f in files if f.label == label)
        try:
            compatible = client.test_compatibility(subject, Schema(file.text, "AVRO"))
        except SchemaRegistryError as exc:
            if exc.http_status_code in (409, 422):
                report.problems.append(f"{file.path}: {exc.error_message}")
                continue
            raise _unavailable(settings, subject, exc) from exc
        except Exception as exc:
            raise _unavailable(settings, subject, exc) from exc
        if not compatible:
            detail = _violation_detail(settings, subject, file) or "the registry gave no detail"
            rule = report.rule or "the registry's default rule"
            report.problems.append(f"{file.path} is not {rule}-compatible with {subject}: {detail}")
    return report


def _registered_version(
    client: SchemaRegistryClient, settings: Settings, subject: str, file: SchemaFile
) -> int | None:
    try:
        found = client.lookup_schema(subject, Schema(file.text, "AVRO"))
    except SchemaRegistryError as exc:
        if is_not_found(exc, SCHEMA_NOT_FOUND, SUBJECT_NOT_FOUND):
            return None
        raise _unavailable(settings, subject, exc) from exc
    except Exception as exc:
        raise _unavailable(settings, subject, exc) from exc
    return found.version if found.version is not None else -1


def _rule(client: SchemaRegistryClient, settings: Settings, subject: str) -> str | None:
    try:
        return str(client.get_compatibility(subject))
    except SchemaRegistryError as exc:
        if exc.http_status_code == 404:
            return None
        raise _unavailable(settings, subject, exc) from exc
    except Exception as exc:
        raise _unavailable(settings, subject, exc) from exc


def _violation_detail(settings: Settings, subject: str, file: SchemaFile) -> str | None:
    """What exactly breaks the rule: Apicurio's own API answers a dry run with the rule
    violation's detail, which its Confluent-compatible check leaves out. Nothing is stored."""
    native = native_api_url(settings.registry.url)
    if native is None:
        return None
    body = json.dumps({"content": {"content": file.text, "contentType": "application/json"}}).encode()
    request = urllib.request.Request(
        f"{native}/groups/default/artifacts/{urllib.request.quote(subject, safe='')}/versions?dryRun=true",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with _DIRECT.open(request, timeout=settings.registry.timeout_s):
            return None  # the dry run passed: no detail to give
    except urllib.error.HTTPError as exc:
        try:
            answer = json.loads(exc.read())
        except ValueError:
            return None
        return str(answer.get("detail") or answer.get("title") or "") or None
    except OSError:
        return None


def _unavailable(settings: Settings, subject: str, exc: BaseException) -> RegistryUnavailableError:
    return RegistryUnavailableError(
        f"registry at {settings.registry.url} did not answer for {subject}: {describe(exc)}"
    )


# --- the command ---------------------------------------------------------------------------


def format_reports(reports: list[SubjectReport]) -> str:
    lines = []
    for r in reports:
        if not r.ok:
            state = "INCOMPATIBLE"
        elif r.registered_now:
            state = "registered " + ", ".join(r.registered_now)
        elif r.pending:
            state = "would register " + ", ".join(r.pending)
        else:
            state = "up to date"
        versions = ",".join(map(str, r.registered)) or "-"
        rule = r.rule or "-"
        lines.append(f"{r.subject:<40} {r.schema:<16} versions={versions:<6} rule={rule:<10} {state}")
        lines.extend(f"    {problem}" for problem in r.problems)
    return "\n".join(lines)


def run(settings: Settings, action: str, out: TextIO = sys.stdout) -> int:
    """`lightbox schemas ACTION`: print the reports; exit code 0 when every subject is fine."""
    try:
        if action == "check":
            reports = check(settings)
        elif action == "register":
            reports = register(settings)
        elif action == "unregister":
            for subject in unregister(settings):
                print(f"deleted {subject}", file=out)
            return 0
        else:
            raise ValueError(f"unknown action {action!r}")
    except CompatibilityError as exc:
        print(format_reports(exc.reports), file=out)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except RegistryUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_reports(reports), file=out)
    return 0 if all(r.ok for r in reports) else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m schemas.compat", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=["check", "register", "unregister"])
    parser.add_argument("--config", help="YAML settings file (else LIGHTBOX_CONFIG, env, defaults)")
    args = parser.parse_args(argv)
    return run(load_settings(args.config), args.action)


if __name__ == "__main__":
    raise SystemExit(main())
