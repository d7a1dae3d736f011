"""The one host/origin rule (processors/http_guard.py) that the gateway and the event-log sink's
query endpoint both apply against DNS rebinding and cross-site posts."""

from __future__ import annotations

import pytest

from processors.http_guard import host_allowed, host_name, same_origin


@pytest.mark.parametrize(
    ("header", "name"),
    [("[::1]:80", "::1"), ("LocalHost:8080", "localhost"), ("127.0.0.1", "127.0.0.1"), ("", None)],
)
def test_host_name_is_the_lower_cased_host_part(header: str, name: str | None) -> None:
    assert host_name(header) == name


@pytest.mark.parametrize("header", ["x:y:z", "bad:port:x", "host:99999999", None])
def test_an_unparsable_host_header_has_no_name(header: str | None) -> None:
    assert host_name(header) is None


@pytest.mark.parametrize(
    "header", ["localhost", "localhost:8080", "127.0.0.1:18123", "[::1]:8080", "LOCALHOST:1", "127.0.0.2:1"]
)
def test_loopback_bound_answers_loopback_names_and_addresses(header: str) -> None:
    assert host_allowed(header, "127.0.0.1")
    assert host_allowed(header, "::1")


@pytest.mark.parametrize(
    "header", ["attacker.example", "attacker.example:18123", "127.0.0.1.nip.io", "", None, "bad:port:x"]
)
def test_loopback_bound_refuses_other_names(header: str | None) -> None:
    # DNS rebinding: the attacker's page re-resolves its own name to 127.0.0.1 and sends it as Host.
    assert not host_allowed(header, "127.0.0.1")


def test_loopback_bound_also_answers_the_address_it_was_started_with() -> None:
    assert host_allowed("127.0.0.5:8080", "127.0.0.5")
    assert host_allowed("[::1]:8080", "[::1]")


def test_bound_elsewhere_every_host_is_answered() -> None:
    assert host_allowed("lightbox.internal:8080", "0.0.0.0")
    assert host_allowed(None, "10.0.0.4")


def test_writes_from_another_site_are_not_same_origin() -> None:
    assert same_origin(None, "127.0.0.1:8080"), "curl and scripts send no Origin"
    assert same_origin("http://127.0.0.1:8080", "127.0.0.1:8080")
    assert not same_origin("https://elsewhere.example", "127.0.0.1:8080")
    assert not same_origin("http://127.0.0.1:9999", "127.0.0.1:8080")
