"""Webhook signatures, the Standard Webhooks way (https://www.standardwebhooks.com).

A notification carries three headers:
  webhook-id         the message id: the same on every retry of one notification, so a receiver
                     de-duplicates on it;
  webhook-timestamp  integer seconds since the epoch, when this try was signed;
  webhook-signature  "v1,<base64 HMAC-SHA256 of '<id>.<timestamp>.<body>'>"; several signatures,
                     space-separated, while a secret is being rotated.
The secret is "whsec_" + base64 of random bytes; the HMAC key is those bytes. The body is signed
as the exact bytes sent, so a sender signs what it serialised and a receiver verifies the raw
body before parsing it.

Same algorithm as the `standardwebhooks` package (tests/unit/test_webhook_sign.py checks this
module against the specification's published test vectors); written here on the standard
library so a stage needs no extra dependency and verification never raises on malformed headers
with anything but WebhookVerificationError.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping

from processors.config import Settings, WebhookEndpoint

SECRET_PREFIX = "whsec_"
# How far a timestamp may be from the receiver's clock (the specification's suggestion).
TOLERANCE_S = 5 * 60
ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER = "webhook-id", "webhook-timestamp", "webhook-signature"


class WebhookVerificationError(ValueError):
    """A notification whose headers are missing, stale, or whose signature does not match."""


def new_secret(nbytes: int = 32) -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(nbytes)).decode()


def secret_key(secret: str | bytes) -> bytes:
    """The HMAC key of a "whsec_..." secret (or of its bare base64, or of raw key bytes)."""
    if isinstance(secret, bytes):
        key = secret
    else:
        text = secret.removeprefix(SECRET_PREFIX)
        try:
            key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except binascii.Error as exc:
            raise ValueError("a webhook secret is 'whsec_' followed by base64") from exc
    if not key:
        raise ValueError("a webhook secret may not be empty")
    return key


def signature(secret: str | bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """ "v1,<base64 HMAC-SHA256>" of '<msg_id>.<timestamp>.<body>'."""
    signed = f"{msg_id}.{int(timestamp)}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def sign(secret: str | bytes, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three headers that go with `body` (send exactly these bytes)."""
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(int(timestamp)),
        SIGNATURE_HEADER: signature(secret, msg_id, timestamp, body),
    }


def verify(
    secret: str | bytes,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    tolerance_s: int = TOLERANCE_S,
) -> str:
    """The message id, when `body` and `headers` carry a valid signature by `secret` made within
    tolerance_s of now; else WebhookVerificationError saying what was wrong."""
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id, stamp, signatures = (lowered.get(h) for h in (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER))
    if not (msg_id and stamp and signatures):
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError(f"webhook-timestamp is not integer seconds: {stamp[:40]!r}") from None
    current = time.time() if now is None else now
    if timestamp < current - tolerance_s:
        raise WebhookVerificationError("message timestamp too old")
    if timestamp > current + tolerance_s:
        raise WebhookVerificationError("message timestamp too new")
    expected = base64.b64decode(signature(secret, msg_id, timestamp, body).removeprefix("v1,"))
    for candidate in signatures.split(" "):
        version, _, encoded = candidate.partition(",")
        if version != "v1":  # other versions (v1a: asymmetric) are skipped, as the spec asks
            continue
        try:
            given = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            continue
        if hmac.compare_digest(given, expected):
            return msg_id
    raise WebhookVerificationError("no matching signature")


def endpoint_for(
    settings: Settings, source: str | None, request_url: str | None = None
) -> WebhookEndpoint | None:
    """Where the completion notification of a request from `source` goes, and its secret: the
    request's own URL (intake checked its host against webhooks.allowed_hosts), signed with the
    source's secret or else webhooks.secret; else webhooks.sources[source]; else
    review.webhook_url signed with webhooks.secret; None when none is set."""
    own = settings.webhooks.sources.get(source) if source else None
    if request_url:
        secret = own.secret if own is not None and own.secret else settings.webhooks.secret
        return WebhookEndpoint(url=request_url, secret=secret)
    if own is not None:
        return own
    if settings.review.webhook_url:
        return WebhookEndpoint(url=settings.review.webhook_url, secret=settings.webhooks.secret)
    return None
