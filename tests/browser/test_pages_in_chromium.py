"""The gateway's pages in Debian's Chromium, driven by Playwright, against the real pipeline:
stages run with review policy "hold", so the assets they make wait for a reviewer.

A reviewer logs in with a token, sees the held assets beside their product references, approves
one with a click and rejects the other from the keyboard, and watches the job page until the
approved one is published; a replay of it is shown side by side with the original; an analyst's
dashboard draws its charts from the events all this recorded. Screenshots of every step are
saved (the path is printed) to be looked at."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from deploy.local.session import PipelineSession, expected_job_ids
from gateway.ops.replay import replay_job
from gateway.ops.tokens import Role
from processors.config import Settings
from tests.browser.helpers import (
    LiveGateway,
    in_thread,
    launch_chromium,
    make_token,
    output_dir,
    with_own_tokens,
)
from tests.support.catalog import events_for

pytestmark = pytest.mark.integration

CHART_IDS = ("quality", "stage_p95", "throughput", "failure_reasons")


class Journey:
    """What the tests of this module share: one gateway, one browser, the two held jobs."""

    def __init__(self, settings: Settings, gateway: LiveGateway, browser: Any, shots: Path) -> None:
        self.settings, self.gateway, self.browser, self.shots = settings, gateway, browser, shots
        self.errors: list[str] = []

    def page(self) -> Page:
        """A fresh browser context (no cookies): console errors and CSP violations collected."""
        context = self.browser.new_context(viewport={"width": 1360, "height": 900})
        page = context.new_page()
        page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("response", lambda r: r.status >= 400 and self.errors.append(f"{r.status} {r.url}"))
        return page

    def log_in(self, page: Page, token: str, path: str) -> None:
        page.goto(self.gateway.url + path)
        expect(page).to_have_url(re.compile(r"/login\?next="))
        page.fill("#token", token)
        page.get_by_role("button", name="Log in").click()
        expect(page).to_have_url(self.gateway.url + path)

    def shot(self, page: Page, name: str) -> None:
        page.screenshot(path=self.shots / f"{name}.png", full_page=True)

    def done(self, page: Page) -> None:
        """No console error or Content-Security-Policy violation on any page this test opened."""
        page.context.close()
        errors, self.errors = self.errors, []
        assert errors == []


@pytest.fixture(scope="module")
def journey(hold_pipeline: PipelineSession, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Journey]:
    settings = with_own_tokens(hold_pipeline.settings, tmp_path_factory.mktemp("gateway"))
    gateway = LiveGateway(settings)
    try:
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            yield Journey(settings, gateway, browser, output_dir(settings, "browser"))
            browser.close()
    finally:
        gateway.close()


@pytest.fixture(scope="module")
def held_jobs(hold_pipeline: PipelineSession, catalog_server: Any) -> tuple[str, str]:
    """Two jobs (two variants each) made by the real pipeline and held for review."""
    events = events_for(catalog_server, [0, 1], f"browser-{uuid.uuid4().hex[:6]}", variants=2)
    job_ids = expected_job_ids(events)
    in_thread(hold_pipeline.submit, events)
    states = in_thread(hold_pipeline.wait_for, job_ids, 180)
    assert states == dict.fromkeys(job_ids, "in_review"), states
    first, second = job_ids
    return first, second


def _wait_for_state(journey: Journey, page: Page, job_id: str, state: str, timeout_s: float = 90) -> None:
    """Reload the job page until it shows the state (the publish stage acts asynchronously)."""
    deadline = time.monotonic() + timeout_s
    page.goto(f"{journey.gateway.url}/jobs/{job_id}")
    while page.locator("#job-state").get_attribute("data-state") != state:
        assert time.monotonic() < deadline, f"job {job_id} never reached {state} on its page"
        time.sleep(1)
        page.reload()


def test_a_reviewer_approves_a_held_asset_and_sees_it_published(
    journey: Journey, held_jobs: tuple[str, str]
) -> None:
    approve_id, reject_id = held_jobs
    page = journey.page()
    page.goto(journey.gateway.url + "/review")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    journey.shot(page, "01-login")
    journey.log_in(page, make_token(journey.settings, "ana-browser", Role.REVIEWER), "/review")

    # The session cookie is out of reach of the page's scripts and of other sites.
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "lightbox_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert "lightbox_session" not in page.evaluate("document.cookie")

    cards = {job_id: page.locator(f'.card[data-job-id="{job_id}"]') for job_id in held_jobs}
    for card in cards.values():
        expect(card).to_be_visible()
        images = card.locator("img.thumb")
        expect(images).to_have_count(2)  # the generated image beside the stored product reference
        for image in images.all():
            image.scroll_into_view_if_needed()
            expect(image).to_have_js_property("complete", True)
            assert image.evaluate("img => img.naturalWidth") > 0, image.get_attribute("src")
        expect(card.locator(".score").first).to_be_visible()
    expect(page.locator("#shortcuts")).to_contain_text("approve")
    journey.shot(page, "02-review-grid")

    # j / k move the focus between cards.
    order = [c.get_attribute("data-job-id") for c in page.locator(".card").all()]
    expect(page.locator(".card.focused")).to_have_attribute("data-job-id", order[0])
    page.keyboard.press("j")
    expect(page.locator(".card.focused")).to_have_attribute("data-job-id", order[1])
    page.keyboard.press("k")
    expect(page.locator(".card.focused")).to_have_attribute("data-job-id", order[0])

    cards[approve_id].get_by_role("button", name="Approve").click()
    expect(page.locator(".notice")).to_contain_text(approve_id)

    # The other from the keyboard: focus its card, r, a reason code, a note, Enter.
    other = page.locator(f'.card[data-job-id="{reject_id}"]')
    other.locator("h3").click()
    page.keyboard.press("r")
    expect(other.locator("select[name=reason_code]")).to_be_focused()
    other.locator("select[name=reason_code]").select_option("off_brand")
    other.locator("input[name=note]").fill("palette is not ours")
    other.locator("input[name=note]").press("Enter")
    expect(page.locator(".notice")).to_contain_text(reject_id)
    journey.shot(page, "03-review-after-decisions")

    _wait_for_state(journey, page, approve_id, "published")
    expect(page.locator("#timeline")).to_contain_text("approved")
    expect(page.locator("main")).to_contain_text("ana-browser")  # the token's name decided
    # Both variants, the kept one marked, beside the stored product reference.
    expect(page.locator("figure.variant:not(.reference)")).to_have_count(2)
    expect(page.locator("figure.variant.reference")).to_have_count(1)
    expect(page.locator("figure.variant.chosen")).to_have_count(1)
    journey.shot(page, "04-job-published")

    _wait_for_state(journey, page, reject_id, "rejected")
    expect(page.locator("main")).to_contain_text("off_brand: palette is not ours")
    journey.shot(page, "05-job-rejected")
    journey.done(page)


def test_a_replay_is_shown_beside_the_original(
    journey: Journey, held_jobs: tuple[str, str], hold_pipeline: PipelineSession
) -> None:
    original = held_jobs[0]
    _, replay_id = in_thread(asyncio.run, replay_job(hold_pipeline.settings, original, "generate"))
    states = in_thread(hold_pipeline.wait_for, [replay_id], 120)
    assert states.get(replay_id) == "in_review", states

    page = journey.page()
    journey.log_in(page, make_token(journey.settings, "sam-browser", Role.SRE), f"/jobs/{replay_id}")
    compare = page.locator("#compare")
    expect(compare).to_be_visible()
    expect(compare.locator(f'.side[data-job-id="{original}"]')).to_contain_text("original")
    expect(compare.locator(f'.side[data-job-id="{replay_id}"]')).to_contain_text("replay")
    expect(compare.locator("img.thumb")).to_have_count(2)
    expect(page.locator("main")).to_contain_text("replay of")
    journey.shot(page, "06-replay-side-by-side")
    journey.done(page)


def test_the_dashboard_draws_its_charts_from_real_events(
    journey: Journey, held_jobs: tuple[str, str]
) -> None:
    page = journey.page()
    with page.expect_response(lambda r: "/dashboard/data" in r.url) as answered:
        journey.log_in(page, make_token(journey.settings, "al-browser", Role.ANALYST), "/dashboard")
    response = answered.value
    assert response.status == 200, response.text()
    data = response.json()
    for chart in CHART_IDS:
        series = data["charts"][chart]["series"]
        assert series, f"{chart}: no series"
        assert any(v for s in series for v in s["values"]), f"{chart}: every value empty"
    expect(page.locator("body")).to_have_attribute("data-loaded", "true")
    for chart in CHART_IDS:
        expect(page.locator(f"#chart-{chart} canvas")).to_have_count(1)
        expect(page.locator(f"#chart-{chart} .u-legend")).to_be_visible()
    expect(page.locator("#tile-published")).not_to_have_text("–")
    journey.shot(page, "07-dashboard-last-hour")

    with page.expect_response(lambda r: "window_s=900" in r.url) as narrower:
        page.select_option("#window", "900")
    assert narrower.value.json()["bucket_s"] < data["bucket_s"]
    expect(page.locator("body")).to_have_attribute("data-loaded", "true")
    expect(page.locator("#status")).to_contain_text("UTC")
    for chart in CHART_IDS:
        expect(page.locator(f"#chart-{chart} canvas")).to_have_count(1)
    journey.shot(page, "08-dashboard-last-15-minutes")
    journey.done(page)
