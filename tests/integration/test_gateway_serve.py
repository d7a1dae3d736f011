"""How the gateway may be served: off loopback only with TLS (its own, or a proxy's said so) and a
Host allowlist; over its own TLS it really answers HTTPS, and its session cookies are Secure."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.web.app import build_app, serve_problem, tls_context
from gateway.web.auth import SESSION_COOKIE
from processors.config import Settings
from tests.integration.test_gateway_api import make_tokens, with_gateway

pytestmark = pytest.mark.integration


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def _with(settings: Settings, **gateway: object) -> Settings:
    return settings.model_copy(update={"gateway": settings.gateway.model_copy(update=gateway)})


def test_off_loopback_the_gateway_needs_tls_and_an_allowlist(
    stack_settings: Settings, tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path)
    plain = _with(stack_settings)
    assert serve_problem(plain, "127.0.0.1") is None
    assert serve_problem(plain, "localhost") is None
    assert "without TLS" in (serve_problem(plain, "0.0.0.0") or "")
    assert "without TLS" in (serve_problem(plain, "10.1.2.3") or "")
    proxied = _with(stack_settings, behind_proxy=True)
    assert "allowed_hosts" in (serve_problem(proxied, "0.0.0.0") or "")
    assert serve_problem(_with(proxied, allowed_hosts=["lightbox.internal"]), "0.0.0.0") is None
    tls = _with(stack_settings, tls_cert=str(cert), tls_key=str(key), allowed_hosts=["lightbox.internal"])
    assert serve_problem(tls, "0.0.0.0") is None
    assert "go together" in (serve_problem(_with(stack_settings, tls_cert=str(cert)), "127.0.0.1") or "")
    missing = _with(stack_settings, tls_cert=str(tmp_path / "no.pem"), tls_key=str(key))
    assert "does not exist" in (serve_problem(missing, "127.0.0.1") or "")


def test_lightbox_serve_refuses_to_start_off_loopback_without_tls(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli.main", "serve", "--host", "0.0.0.0", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"LIGHTBOX_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0
    assert "refusing to serve on 0.0.0.0 without TLS" in result.stderr


@pytest.fixture
async def https_gateway(
    stack_settings: Settings, tmp_path: Path
) -> AsyncIterator[tuple[str, ssl.SSLContext, dict]]:
    cert, key = self_signed(tmp_path)
    settings = with_gateway(stack_settings, tmp_path, tls_cert=str(cert), tls_key=str(key))
    tokens = make_tokens(settings)
    runner = web.AppRunner(build_app(settings), shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls_context(settings)).start()
    trust = ssl.create_default_context(cafile=str(cert))
    try:
        yield f"https://127.0.0.1:{runner.addresses[0][1]}", trust, tokens
    finally:
        await runner.cleanup()


async def test_the_gateway_serves_https_with_secure_session_cookies(
    https_gateway: tuple[str, ssl.SSLContext, dict],
) -> None:
    url, trust, tokens = https_gateway
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/healthz", ssl=trust) as response:
            assert response.status == 200
        async with session.post(
            f"{url}/v1/session", json={"token": tokens["reviewer"]}, ssl=trust
        ) as response:
            assert response.status == 200
            cookie = response.cookies[SESSION_COOKIE]
            assert cookie["secure"] and cookie["httponly"] and cookie["samesite"] == "Strict"
        # Plain HTTP to the TLS port gets no answer from the app.
        plain = url.replace("https://", "http://")
        with pytest.raises(aiohttp.ClientError):
            async with session.get(f"{plain}/healthz") as response:
                await response.read()
