"""Who is calling: API tokens with roles, browser sessions, and CSRF tokens for forms.

Roles are `Role.SUBMITTER`, `Role.REVIEWER`, `Role.SRE`, `Role.ANALYST`, `Role.ADMIN` (a StrEnum:
str(Role.REVIEWER) == "reviewer"). How a route uses it (the `authenticate` middleware has already
run for every request)::

    from gateway.web.auth import Role, require, require_form, identity_of

    @routes.get("/v1/jobs")
    async def list_jobs(request):
        who = require(request, Role.ANALYST, Role.SRE, Role.SUBMITTER, Role.REVIEWER)
        ...                      # who.name, who.role; admin passes every require()

    @routes.post("/review/{job_id}")           # an HTML form posted from a page
    async def decide(request):
        who, form = await require_form(request, Role.REVIEWER)   # 401/403, CSRF checked
        reviewer = who.name      # never a field the client sends

    @routes.get("/review")                     # a page: send a browser without a session to log in
    async def page(request):
        who = identity_of(request)
        if who is None:
            raise web.HTTPSeeOther("/login?next=/review")
        token = csrf_token(request)            # put it in every form as <input name="csrf_token">

Logging in from a page (a form with the token, posted to a route of the pages)::

    identity = await login(request, form["token"])      # Problem 401 for a bad token
    response = web.HTTPSeeOther("/review")
    start_session(request, response, identity)           # HttpOnly, SameSite=Strict, Secure on TLS
    raise response
    # logging out: end_session(request, response)

JSON clients send ``Authorization: Bearer lbx_...`` and need no CSRF token. A browser session
(cookie ``lightbox_session``) making an unsafe request (POST, PUT, PATCH, DELETE) must prove it
came from the gateway's own page: forms through require_form (field ``csrf_token``), scripts
through the ``X-CSRF-Token`` header (the value of csrf_token(request), which a page can embed).
require() refuses such a request (403, problem type csrf) unless one of those was checked. The
cookie is SameSite=Strict and the Origin of every unsafe request is checked too (guards.py): the
CSRF token is the third line, for browsers that send neither.

Errors are raised as responses.Problem (problem+json): 401 with ``WWW-Authenticate: Bearer``
when there is no identity, 403 naming the roles that may when the role is wrong.

Sessions are signed, not stored: the cookie holds a random session id, the token's id and an
expiry, under an HMAC with the gateway's session key (settings.gateway.session_key_file). The
token is looked up on every request, so revoking it ends its sessions too; logging out records
the session id as ended (gateway/web/ended_sessions.py), so a copy of the cookie stops working.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from multidict import MultiDictProxy

from gateway.ops.tokens import Role, TokenRecord, TokenStore, split_token
from gateway.web.ended_sessions import EndedSessions
from gateway.web.responses import Handler, Problem
from processors.config import Settings

__all__ = [
    "CSRF_FIELD",
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "Identity",
    "Role",
    "authenticate",
    "check_csrf",
    "csrf_token",
    "end_session",
    "has_session",
    "identity_of",
    "login",
    "require",
    "require_form",
    "start_session",
]

SESSION_COOKIE = "lightbox_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# scrypt checks at once (16 MiB each): a flood of wrong secrets costs memory only this deep.
CONCURRENT_HASHES = 2
# ... and checks waiting for one: past this a check is refused at once (503, try again), so a
# flood neither queues without end nor delays a real caller's first check by minutes.
WAITING_HASHES = 16
# Wrong secrets for one token id within the window: past this its checks are refused (429) until
# the window has passed, so a flood aimed at one known token id costs no scrypt at all.
WRONG_SECRETS = 5
WRONG_SECRET_WINDOW_S = 60.0


@dataclass(frozen=True)
class Identity:
    """Who a request acts as: the token's name (what a decision records) and its role."""

    name: str
    role: Role
    token_id: str = field(default="", compare=False)

    def may(self, *roles: Role) -> bool:
        return self.role is Role.ADMIN or self.role in roles

    @property
    def caller(self) -> str:
        """Who this is, uniquely: the token's id. Names need not be unique (two clients may be
        given tokens under one name), so per-caller state such as Idempotency-Keys keys on this."""
        return f"token:{self.token_id}" if self.token_id else f"name:{self.name}"


def session_key_path(settings: Settings) -> Path:
    configured = settings.gateway.session_key_file
    return Path(configured).expanduser() if configured else settings.home / "gateway" / "session.key"


def _load_or_make_key(path: Path) -> bytes:
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_bytes(32)
    # Written whole under a private name, then linked in place: the key file appears complete
    # or not at all, and of two gateways starting at once the second uses the first's key.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key.hex())
    try:
        os.link(tmp, path)
    except FileExistsError:
        return bytes.fromhex(path.read_text().strip())
    finally:
        tmp.unlink()
    return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Authenticator:
    """Tokens (from the token file, re-read when it changes) and signed sessions. One per app."""

    def __init__(self, settings: Settings, store: TokenStore | None = None) -> None:
        self.store = store or TokenStore.of(settings)
        self.secure_cookies = bool(settings.gateway.tls_cert) or settings.gateway.behind_proxy
        self.session_ttl_s = settings.gateway.session_ttl_s
        self._key = _load_or_make_key(session_key_path(settings))
        self.ended = EndedSessions(session_key_path(settings).with_name("ended_sessions"))
        self._stamp: tuple[int, int, int] | None = None
        self._records: dict[str, TokenRecord] = {}
        # token id -> sha256 of a secret scrypt already accepted: a token is hashed slowly once,
        # not on every request. Cleared whenever the file changes (a revocation among them).
        self._verified: dict[str, bytes] = {}
        self._hashing = asyncio.Semaphore(CONCURRENT_HASHES)
        self._waiting = 0
        # token id -> times of its recent wrong secrets
        self._wrong: dict[str, list[float]] = {}

    def _current(self) -> dict[str, TokenRecord]:
        # One stat a request, on the event loop: microseconds on a local file, and what makes a
        # revocation take effect on the very next request (no grace period).
        stamp = self.store.stamp()
        if stamp != self._stamp:
            self._records = {r.token_id: r for r in self.store.load() if r.active}
            self._verified = {}
            self._stamp = stamp
        return self._records

    def _refuse_if_guessed(self, token_id: str) -> None:
        now = time.monotonic()
        recent = [t for t in self._wrong.get(token_id, []) if now - t < WRONG_SECRET_WINDOW_S]
        if recent:
            self._wrong[token_id] = recent
        else:
            self._wrong.pop(token_id, None)
        if len(recent) >= WRONG_SECRETS:
            wait_s = int(WRONG_SECRET_WINDOW_S - (now - recent[0])) + 1
            raise Problem(
                429,
                f"{len(recent)} wrong secrets for this token in the last {WRONG_SECRET_WINDOW_S:g} s: "
                f"it is not checked again for {wait_s} s",
                headers={"Retry-After": str(wait_s)},
            )
        if self._waiting >= WAITING_HASHES:
            raise Problem(503, "too many token checks waiting; try again", headers={"Retry-After": "1"})

    async def check_token(self, token: str) -> TokenRecord | None:
        parts = split_token(token)
        if parts is None:
            return None
        token_id, secret = parts
        record = self._current().get(token_id)
        if record is None:
            return None
        fast = hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()
        remembered = self._verified.get(token_id)
        if remembered is not None:
            return record if hmac.compare_digest(remembered, fast) else None
        self._refuse_if_guessed(token_id)
        self._waiting += 1
        try:
            async with self._hashing:
                verified = await asyncio.to_thread(self.store.verify, token, [record])
        finally:
            self._waiting -= 1
        if verified is None:
            self._wrong.setdefault(token_id, []).append(time.monotonic())
            return None
        self._verified[token_id] = fast
        return verified

    def _mac(self, *parts: str) -> str:
        return _b64(hmac.new(self._key, "|".join(parts).encode(), hashlib.sha256).digest())

    def session_value(self, token_id: str) -> str:
        session_id = secrets.token_hex(16)
        expires = str(int(time.time() + self.session_ttl_s))
        mac = self._mac("session", "v1", session_id, token_id, expires)
        return ".".join(("v1", session_id, token_id, expires, mac))

    def check_session(self, value: str) -> tuple[TokenRecord, str] | None:
        """(token record, session id) of a valid, unexpired cookie whose token is still active."""
        parts = value.split(".")
        if len(parts) != 5 or parts[0] != "v1":
            return None
        _, session_id, token_id, expires, mac = parts
        if not same_text(mac, self._mac("session", "v1", session_id, token_id, expires)):
            return None
        if not expires.isdigit() or int(expires) < time.time():
            return None
        if self.ended.is_ended(session_id):
            return None
        record = self._current().get(token_id)
        return (record, session_id) if record is not None else None

    def csrf_for(self, session_id: str) -> str:
        return self._mac("csrf", session_id)


AUTH = web.AppKey("auth", Authenticator)
# Who is calling (None: nobody authenticated), the browser session it came from ("" for a bearer
# token), and whether this request's CSRF token was checked: set once, by `authenticate`.
IDENTITY = web.RequestKey("identity", object)  # Identity | None
SESSION_ID = web.RequestKey("session_id", str)
CSRF_OK = web.RequestKey("csrf_ok", bool)


def same_text(given: str, expected: str) -> bool:
    """A constant-time comparison of text from a request: compare_digest refuses a str with
    non-ASCII characters (TypeError, a 500), and aiohttp hands undecodable header bytes over as
    surrogates, so both sides are compared as bytes."""
    return hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")
    )


def _identity(record: TokenRecord) -> Identity:
    return Identity(record.name, record.role, record.token_id)


def _unauthenticated(detail: str) -> Problem:
    challenge = {"WWW-Authenticate": 'Bearer realm="lightbox"'}
    return Problem(401, detail, kind="unauthenticated", headers=challenge)


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Sets request[IDENTITY] (Identity or None) from `Authorization: Bearer <token>`, else
    from the session cookie. A bearer token that is wrong is refused (401) whatever the route:
    a client sending a revoked token should hear so, not be served as anonymous. A stale
    cookie is simply no session (the page sends its browser to log in again)."""
    auth = request.app[AUTH]
    request[IDENTITY] = None
    request[SESSION_ID] = ""
    request[CSRF_OK] = False
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthenticated("the Authorization header must be 'Bearer <token>'")
        record = await auth.check_token(token.strip())
        if record is None:
            raise _unauthenticated("the token is not valid (unknown, revoked or mistyped)")
        request[IDENTITY] = _identity(record)
    elif cookie := request.cookies.get(SESSION_COOKIE):
        session = auth.check_session(cookie)
        if session is not None:
            record, session_id = session
            request[IDENTITY], request[SESSION_ID] = _identity(record), session_id
            header_token = request.headers.get(CSRF_HEADER)
            if header_token is not None:
                request[CSRF_OK] = same_text(header_token, auth.csrf_for(session_id))
    return await handler(request)


def identity_of(request: web.Request) -> Identity | None:
    return request.get(IDENTITY)


def has_session(request: web.Request) -> bool:
    """Whether the identity came from a browser session (so its forms need csrf_token)."""
    return bool(request.get(SESSION_ID))


def require(request: web.Request, *roles: Role) -> Identity:
    """The caller's identity if its role is among `roles` (admin always is); else Problem 401
    (no identity) or 403 (another role, or a session's unsafe request without its CSRF token)."""
    identity = identity_of(request)
    if identity is None:
        raise _unauthenticated(
            "this route needs an API token (Authorization: Bearer <token>) or a logged-in session"
        )
    if not identity.may(*roles):
        allowed = ", ".join(sorted({str(r) for r in (*roles, Role.ADMIN)}))
        raise Problem(
            403, f"{identity.name} has role {identity.role}; this route is for: {allowed}", kind="forbidden"
        )
    if request.get(SESSION_ID) and request.method not in SAFE_METHODS and not request.get(CSRF_OK):
        raise Problem(
            403,
            f"a session's {request.method} needs its CSRF token "
            f"({CSRF_FIELD} form field or {CSRF_HEADER} header)",
            kind="csrf",
        )
    return identity


async def require_form(request: web.Request, *roles: Role) -> tuple[Identity, MultiDictProxy[str | bytes]]:
    """For a route an HTML form posts to: the identity (as require) and the form, whose
    csrf_token field has been checked against the session. A bearer-token client posting the
    form needs no CSRF field."""
    if identity_of(request) is None:
        require(request, *roles)  # raises 401 before the body is read
    form = await request.post()
    if request.get(SESSION_ID):
        submitted = form.get(CSRF_FIELD)
        check_csrf(request, submitted if isinstance(submitted, str) else "")
    return require(request, *roles), form


def csrf_token(request: web.Request) -> str:
    """The CSRF token of this request's session, for the forms of a page. Problem 401 when the
    request has no session (a page should have sent its browser to log in first)."""
    session_id = request.get(SESSION_ID)
    if not session_id:
        raise _unauthenticated("no session: log in first")
    return request.app[AUTH].csrf_for(session_id)


def check_csrf(request: web.Request, submitted: str) -> None:
    """Raises Problem 403 unless `submitted` is this session's CSRF token; marks the request
    checked, so require() lets its unsafe method through."""
    session_id = request.get(SESSION_ID)
    expected = request.app[AUTH].csrf_for(session_id) if session_id else None
    if expected is None or not submitted or not same_text(submitted, expected):
        detail = "the form's CSRF token is missing or is not this session's"
        raise Problem(403, detail, kind="csrf", field=CSRF_FIELD)
    request[CSRF_OK] = True


async def login(request: web.Request, token: str) -> Identity:
    """The identity of a token typed into a login form; Problem 401 for a wrong one."""
    record = await request.app[AUTH].check_token(token.strip()) if isinstance(token, str) else None
    if record is None:
        raise _unauthenticated("the token is not valid (unknown, revoked or mistyped)")
    return _identity(record)


def start_session(request: web.Request, response: web.StreamResponse, identity: Identity) -> str:
    """Set the session cookie for `identity` on `response`; returns the session's CSRF token.
    HttpOnly (no script reads it), SameSite=Strict (no other site's page sends it), Path=/, and
    Secure when the gateway serves TLS itself or sits behind a TLS-terminating proxy."""
    auth = request.app[AUTH]
    if not identity.token_id:
        raise ValueError("a session needs an identity that came from a token (login())")
    value = auth.session_value(identity.token_id)
    response.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=int(auth.session_ttl_s),
        path="/",
        httponly=True,
        samesite="Strict",
        secure=auth.secure_cookies or request.secure,
    )
    return auth.csrf_for(value.split(".")[1])


def end_session(request: web.Request, response: web.StreamResponse) -> None:
    """Log the request's browser session out: its id is refused from now on (a copy of the
    cookie included) and the cookie is cleared. The token itself stays valid."""
    session_id = request.get(SESSION_ID, "")
    if session_id:
        auth = request.app[AUTH]
        auth.ended.end(session_id, time.time() + auth.session_ttl_s)
    response.del_cookie(SESSION_COOKIE, path="/")
