"""Logging in to the pages with an API token, and out.

The token is posted once, from the login form, and never kept by the browser: the answer sets a
signed session cookie (HttpOnly, SameSite=Strict: gateway/web/auth.py) and sends the browser on
to the page it came for. The form has no CSRF token (there is no session yet to tie one to);
another site's page cannot log a browser in under its own token all the same, because the
gateway refuses writes whose Origin is another site (guards.same_site_writes).
"""

from __future__ import annotations

from aiohttp import web

from gateway.web.auth import IDENTITY, end_session, identity_of, login, require_form, start_session
from gateway.web.pages import JOB_READERS, NAV, page, render, safe_next
from gateway.web.responses import Problem

# A token is ~70 characters; anything much longer is not one and is not looked at.
MAX_TOKEN_CHARS = 512

routes = web.RouteTableDef()


def _home(request: web.Request) -> str:
    """Where a logged-in person lands by default: the first page of the nav they may open."""
    identity = identity_of(request)
    for link in NAV:
        if identity is not None and identity.may(*link.roles):
            return link.href
    return "/login"


@routes.get("/login")
@page
async def login_page(request: web.Request) -> web.Response:
    next_url = safe_next(request.query.get("next"), "")
    if identity_of(request) is not None and next_url:
        raise web.HTTPSeeOther(next_url)
    return render(request, "login.html", problem="", next_url=next_url)


@routes.post("/login")
@page
async def login_post(request: web.Request) -> web.Response:
    form = await request.post()
    token, next_url = form.get("token"), safe_next(str(form.get("next") or ""), "")
    if not isinstance(token, str) or not token.strip() or len(token) > MAX_TOKEN_CHARS:
        return render(request, "login.html", status=400, problem="Paste an API token.", next_url=next_url)
    try:
        identity = await login(request, token)
    except Problem as exc:
        if exc.status != 401:
            raise
        return render(
            request,
            "login.html",
            status=401,
            problem="That token is not valid (unknown, revoked or mistyped).",
            next_url=next_url,
        )
    request[IDENTITY] = identity  # so _home picks this identity's first page
    response = web.HTTPSeeOther(next_url or _home(request))
    start_session(request, response, identity)
    raise response


@routes.post("/logout")
@page
async def logout(request: web.Request) -> web.Response:
    if identity_of(request) is not None:
        # A session's logout carries its CSRF token: another site cannot log a reviewer out.
        await require_form(request, *JOB_READERS)
    response = web.HTTPSeeOther("/login")
    end_session(request, response)
    raise response
