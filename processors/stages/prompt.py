"""prompt + route: jobs.referenced → generation.requests.

Renders the job's versioned template (a missing variable fails the job with its name, never an
empty string) and routes it by the rules file; the template version and the rule id and version are
recorded on the job. Rules reload when their file changes, without a restart.
"""

from __future__ import annotations

from typing import ClassVar

from processors.prompting import TemplateError, TemplateStore, variables_for_job
from processors.routing import Router, RoutingError
from processors.runtime import InputRecord, Outcome, Stage
from schemas.topics import Topic


class PromptStage(Stage):
    name: ClassVar[str] = "prompt"
    inputs: ClassVar[tuple[Topic, ...]] = (Topic.JOBS_REFERENCED,)
    outputs: ClassVar[tuple[Topic, ...]] = (Topic.GENERATION_REQUESTS,)

    async def start(self) -> None:
        self.templates = TemplateStore()
        self.router = Router.from_file(self.ctx.settings.routing.rules_file or None)

    async def before_batch(self) -> None:
        self.router.maybe_reload()

    async def handle(self, record: InputRecord) -> Outcome:
        job = record.value
        spec = job["spec"]
        try:
            template = self.templates.get(spec["template_id"], spec.get("template_version"))
            rendered = self.templates.render(template, variables_for_job(job))
        except TemplateError as exc:
            return Outcome.fail(job, exc.reason, exc.detail, template=spec["template_id"])
        # The rendered prompt's own record: it carries the scene and the variables dropped to fit
        # the token limit, and the router reads the scene from it (unless a rule pins one).
        job["prompt"] = rendered.to_record()
        try:
            job["route"] = self.router.route(job)
        except RoutingError as exc:
            return Outcome.fail(job, "no_route", str(exc))
        route = job["route"]
        return Outcome.forward(
            Topic.GENERATION_REQUESTS,
            job,
            "running",
            template=f"{rendered.template_id}@{rendered.template_version}",
            rule=f"{route['rule_id']}@{route['rules_version']}",
            backend=route["backend"],
            model=route["model"],
            canary=str(route["canary"]).lower(),
        )
