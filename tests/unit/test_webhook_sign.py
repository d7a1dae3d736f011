"""Webhook signing against the Standard Webhooks specification's published test vectors (the
reference libraries' own tests: secret, message id, timestamp, payload and the signature they
must give), and verification's refusals."""

from __future__ import annotations

import base64

import pytest

from processors.webhooks import (
    WebhookVerificationError,
    endpoint_for,
    new_secret,
    secret_key,
    sign,
    signature,
    verify,
)

# From the specification's reference test suite (libraries/*/tests): sign_function.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
# The suite's "invalid signature": the same with its last base64 digit changed.
VECTOR_WRONG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="


def _headers(**overrides: str) -> dict[str, str]:
    headers = sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY)
    headers.update(overrides)
    return headers


def test_signature_matches_the_published_vector() -> None:
    assert signature(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE
    # The secret with or without its prefix names the same key.
    assert signature(VECTOR_SECRET.removeprefix("whsec_"), VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == (
        VECTOR_SIGNATURE
    )
    assert sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": VECTOR_SIGNATURE,
    }


def test_verify_accepts_the_vector_and_refuses_its_tampered_forms() -> None:
    now = VECTOR_TIMESTAMP + 10
    assert verify(VECTOR_SECRET, _headers(), VECTOR_BODY, now=now) == VECTOR_ID
    # Header names are case-insensitive (HTTP).
    upper = {k.title(): v for k, v in _headers().items()}
    assert verify(VECTOR_SECRET, upper, VECTOR_BODY, now=now) == VECTOR_ID
    refusals = [
        (_headers(**{"webhook-signature": VECTOR_WRONG}), VECTOR_BODY),
        (_headers(), VECTOR_BODY + b" "),  # one byte of body more
        (_headers(**{"webhook-id": "msg_other"}), VECTOR_BODY),
        (_headers(**{"webhook-timestamp": str(VECTOR_TIMESTAMP + 1)}), VECTOR_BODY),
        (_headers(**{"webhook-timestamp": "hello"}), VECTOR_BODY),
        (_headers(**{"webhook-signature": "v1,not base64!"}), VECTOR_BODY),
        (_headers(**{"webhook-signature": "garbage"}), VECTOR_BODY),
        # The right bytes under another version are not a v1 signature.
        (_headers(**{"webhook-signature": VECTOR_SIGNATURE.replace("v1,", "v2,")}), VECTOR_BODY),
    ]
    for header in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        missing = _headers()
        del missing[header]
        refusals.append((missing, VECTOR_BODY))
    for headers, body in refusals:
        with pytest.raises(WebhookVerificationError):
            verify(VECTOR_SECRET, headers, body, now=now)
    with pytest.raises(WebhookVerificationError):
        verify("whsec_" + base64.b64encode(b"another key").decode(), _headers(), VECTOR_BODY, now=now)


def test_one_valid_signature_among_several_is_enough() -> None:
    """Secret rotation: the sender signs with the old and the new secret."""
    several = " ".join(
        ["v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=", "v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=",
         VECTOR_SIGNATURE]
    )  # fmt: skip
    headers = _headers(**{"webhook-signature": several})
    assert verify(VECTOR_SECRET, headers, VECTOR_BODY, now=VECTOR_TIMESTAMP) == VECTOR_ID


def test_timestamps_outside_the_tolerance_are_refused() -> None:
    tolerance = 300
    assert verify(VECTOR_SECRET, _headers(), VECTOR_BODY, now=VECTOR_TIMESTAMP + tolerance) == VECTOR_ID
    assert verify(VECTOR_SECRET, _headers(), VECTOR_BODY, now=VECTOR_TIMESTAMP - tolerance) == VECTOR_ID
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(VECTOR_SECRET, _headers(), VECTOR_BODY, now=VECTOR_TIMESTAMP + tolerance + 1)
    with pytest.raises(WebhookVerificationError, match="too new"):
        verify(VECTOR_SECRET, _headers(), VECTOR_BODY, now=VECTOR_TIMESTAMP - tolerance - 1)


def test_new_secrets_round_trip_and_bad_secrets_are_refused() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_") and len(secret_key(secret)) == 32
    headers = sign(secret, "msg_1", 1_700_000_000, b"{}")
    assert verify(secret, headers, b"{}", now=1_700_000_000) == "msg_1"
    for bad in ("", "whsec_", "whsec_!!!"):
        with pytest.raises(ValueError):
            secret_key(bad)


def test_the_endpoint_is_the_sources_own_else_the_catch_all() -> None:
    from processors.config import Settings, WebhookEndpoint

    settings = Settings()
    assert endpoint_for(settings, "shop") is None
    secret = new_secret()
    settings = settings.model_copy(
        update={
            "webhooks": settings.webhooks.model_copy(
                update={"sources": {"shop": WebhookEndpoint(url="http://127.0.0.1:1/shop", secret=secret)}}
            ),
        }
    )
    assert endpoint_for(settings, "shop") == WebhookEndpoint(url="http://127.0.0.1:1/shop", secret=secret)
    assert endpoint_for(settings, "other") is None
    settings = settings.model_copy(
        update={
            "review": settings.review.model_copy(update={"webhook_url": "http://127.0.0.1:1/all"}),
            "webhooks": settings.webhooks.model_copy(update={"secret": "whsec_c2VjcmV0"}),
        }
    )
    assert endpoint_for(settings, "other") == WebhookEndpoint(
        url="http://127.0.0.1:1/all", secret="whsec_c2VjcmV0"
    )
    assert endpoint_for(settings, "shop").url.endswith("/shop")  # type: ignore[union-attr]
