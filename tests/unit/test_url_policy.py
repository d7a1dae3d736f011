"""check_url: what a reference URL may point at. No network: IP literals and localhost resolve
locally; the mixed-answer cases pass the DNS answer in as data through the resolver argument."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from processors.config import ReferenceSettings
from processors.references.url_policy import (
    AddressResolver,
    FetchPolicy,
    Reason,
    ReferenceFetchError,
    address_refusal,
    check_url,
    parse_allow_entry,
)

POLICY = FetchPolicy()
PUBLIC_V4 = "93.184.215.14"
PUBLIC_V6 = "2606:2800:21f:cb07:6820:80da:af6b:8b2c"


def answers(*addresses: str) -> AddressResolver:
    """A DNS answer given as data: the host resolves to exactly these addresses."""

    async def resolve(host: str, port: int) -> Sequence[str]:
        return addresses

    return resolve


async def refused(url: str, policy: FetchPolicy = POLICY, **kw: AddressResolver) -> str:
    with pytest.raises(ReferenceFetchError) as info:
        await check_url(url, policy, kw.get("resolver"))
    assert info.value.retryable is False
    return info.value.reason


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.com/a.png",
        "data:image/png;base64,iVBORw0KGgo=",
        "gopher://example.com/",
        "javascript:alert(1)",
        "example.com/a.png",
    ],
)
async def test_non_http_schemes_are_refused(url: str) -> None:
    assert await refused(url) == Reason.SCHEME_NOT_ALLOWED


@pytest.mark.parametrize(
    "url",
    [
        f"http://user:password@{PUBLIC_V4}/a.png",
        f"http://user@{PUBLIC_V4}/a.png",
        f"http://@{PUBLIC_V4}/a.png",
    ],
)
async def test_credentials_in_url_are_refused(url: str) -> None:
    assert await refused(url) == Reason.CREDENTIALS_IN_URL


async def test_overlong_url_is_refused() -> None:
    url = f"http://{PUBLIC_V4}/" + "a" * POLICY.max_url_length
    assert await refused(url) == Reason.URL_TOO_LONG


async def test_missing_host_is_refused() -> None:
    assert await refused("http:///a.png") == Reason.MISSING_HOST


@pytest.mark.parametrize(
    "url", [f"http://{PUBLIC_V4}/a b.png", f"http://{PUBLIC_V4}/a\r\nX: y", "http://h:99999/"]
)
async def test_malformed_urls_are_refused(url: str) -> None:
    assert await refused(url) == Reason.INVALID_URL


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "169.254.1.1",
        "0.0.0.0",
        "100.64.0.1",  # carrier-grade NAT
        "224.0.0.1",
        "240.0.0.1",
        "[::1]",
        "[::]",
        "[fe80::1]",
        "[fc00::1]",
        "[fd00:ec2::254]",
        "[ff02::1]",
        "[::ffff:127.0.0.1]",  # IPv4-mapped loopback
        "[64:ff9b::a00:1]",  # NAT64 of 10.0.0.1
        "[2002:7f00:1::]",  # 6to4 of 127.0.0.1
        "localhost",
        "2130706433",  # 127.0.0.1 in decimal: getaddrinfo maps it
        "0x7f.1",
    ],
)
async def test_private_and_special_addresses_are_refused(host: str) -> None:
    assert await refused(f"http://{host}/a.png") == Reason.PRIVATE_ADDRESS


async def test_every_resolved_address_must_be_public() -> None:
    resolver = answers(PUBLIC_V4, "10.0.0.7")
    assert await refused("http://cdn.example/a.png", resolver=resolver) == Reason.PRIVATE_ADDRESS


async def test_public_addresses_are_admitted() -> None:
    target = await check_url("https://cdn.example/a.png", POLICY, answers(PUBLIC_V4, PUBLIC_V6))
    assert target.host == "cdn.example"
    assert target.port == 443
    assert set(target.addresses) == {PUBLIC_V4, PUBLIC_V6}
    assert not target.host_allowlisted
    literal = await check_url(f"http://{PUBLIC_V4}:8080/x.jpg?v=1", POLICY)
    assert literal.port == 8080
    assert str(literal.url) == f"http://{PUBLIC_V4}:8080/x.jpg?v=1"


async def test_allowlisted_host_name_is_admitted_whatever_it_resolves_to() -> None:
    policy = FetchPolicy(allow_hosts=("localhost",))
    target = await check_url("http://LOCALHOST:8000/a.png", policy)
    assert target.host_allowlisted
    # The name is allowlisted, not its address: the loopback literal is still refused.
    assert await refused("http://127.0.0.1:8000/a.png", policy) == Reason.PRIVATE_ADDRESS


async def test_allowlisted_address_and_network_are_admitted() -> None:
    by_ip = FetchPolicy(allow_hosts=("127.0.0.1",))
    await check_url("http://127.0.0.1:9000/a.png", by_ip)
    assert await refused("http://127.0.0.2/a.png", by_ip) == Reason.PRIVATE_ADDRESS
    by_net = FetchPolicy(allow_hosts=("10.0.0.0/8",))
    await check_url("http://images.internal/a.png", by_net, answers("10.20.30.40"))
    assert await refused("http://192.168.0.1/", by_net) == Reason.PRIVATE_ADDRESS


def test_metadata_address_needs_an_exact_allowlist_entry() -> None:
    broad = FetchPolicy(allow_hosts=("169.254.0.0/16",))
    assert address_refusal("169.254.1.1", broad) is None
    assert "metadata" in (address_refusal("169.254.169.254", broad) or "")
    assert "metadata" in (address_refusal("fd00:ec2::254", FetchPolicy()) or "")
    exact = FetchPolicy(allow_hosts=("169.254.169.254",))
    assert address_refusal("169.254.169.254", exact) is None


async def test_unresolvable_host_is_refused() -> None:
    async def nxdomain(host: str, port: int) -> Sequence[str]:
        import socket

        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(ReferenceFetchError) as info:
        await check_url("http://no-such-host.invalid/a.png", POLICY, nxdomain)
    assert info.value.reason == Reason.UNRESOLVABLE_HOST
    assert not info.value.retryable


def test_http_status_reasons() -> None:
    assert Reason.http_status(404) == "http_404"
    assert Reason.http_status(403) == "http_403"
    assert Reason.http_status(503) == Reason.HTTP_5XX == "http_5xx"


def test_the_default_policy_is_the_configured_default() -> None:
    """FetchPolicy's limits default to configuration's, so a test's FetchPolicy() is what ships."""
    assert FetchPolicy() == FetchPolicy.from_settings(ReferenceSettings())
    tight = ReferenceSettings(max_pixels=1000, retries=0, allow_hosts=["cdn.internal"])
    policy = FetchPolicy.from_settings(tight)
    assert (policy.max_pixels, policy.retries, policy.allow_hosts) == (1000, 0, ("cdn.internal",))


# --- allowlist entries with a port ------------------------------------------------------------


async def test_an_allowlisted_host_with_a_port_admits_only_that_port() -> None:
    policy = FetchPolicy(allow_hosts=("localhost:9000",))
    target = await check_url("http://localhost:9000/a.png", policy)
    assert target.host_allowlisted
    assert await refused("http://localhost:9001/a.png", policy) == Reason.PRIVATE_ADDRESS
    assert await refused("http://localhost/a.png", policy) == Reason.PRIVATE_ADDRESS


async def test_an_allowlisted_address_or_network_with_a_port_admits_only_that_port() -> None:
    by_ip = FetchPolicy(allow_hosts=("127.0.0.1:9000",))
    await check_url("http://127.0.0.1:9000/a.png", by_ip)
    assert await refused("http://127.0.0.1:8080/a.png", by_ip) == Reason.PRIVATE_ADDRESS
    by_net = FetchPolicy(allow_hosts=("10.0.0.0/8:443",))
    await check_url("https://images.internal/a.png", by_net, answers("10.20.30.40"))
    with pytest.raises(ReferenceFetchError) as info:
        await check_url("http://images.internal/a.png", by_net, answers("10.20.30.40"))
    assert "port 443 only" in info.value.detail
    by_v6 = FetchPolicy(allow_hosts=("[::1]:9000",))
    await check_url("http://[::1]:9000/a.png", by_v6)
    assert await refused("http://[::1]:9001/a.png", by_v6) == Reason.PRIVATE_ADDRESS


def test_entries_for_one_host_add_up_and_a_portless_entry_admits_every_port() -> None:
    two = FetchPolicy(allow_hosts=("127.0.0.1:9000", "127.0.0.1:9001"))
    assert address_refusal("127.0.0.1", two, 9000) is None
    assert address_refusal("127.0.0.1", two, 9001) is None
    assert address_refusal("127.0.0.1", two, 9002) is not None
    assert address_refusal("127.0.0.1", two) is not None  # no port known: a port-bound entry cannot apply
    anyport = FetchPolicy(allow_hosts=("127.0.0.1:9000", "127.0.0.1"))
    assert address_refusal("127.0.0.1", anyport, 1234) is None


@pytest.mark.parametrize(
    ("entry", "host", "port"),
    [
        ("cdn.internal", "cdn.internal", None),
        ("cdn.internal:8443", "cdn.internal", 8443),
        ("10.0.0.5:80", "10.0.0.5", 80),
        ("10.0.0.0/8:9000", "10.0.0.0/8", 9000),
        ("fd00::5", "fd00::5", None),
        ("fd00::/8", "fd00::/8", None),
        ("[fd00::5]", "fd00::5", None),
        ("[fd00::5]:443", "fd00::5", 443),
    ],
)
def test_allow_entries_parse(entry: str, host: str, port: int | None) -> None:
    parsed = parse_allow_entry(entry)
    assert (parsed.host, parsed.port) == (host, port)


@pytest.mark.parametrize(
    "entry", ["cdn.internal:0", "cdn.internal:99999", "cdn.internal:http", "[fd00::5", ":80"]
)
def test_malformed_allow_entries_are_refused_when_the_policy_is_made(entry: str) -> None:
    with pytest.raises(ValueError):
        FetchPolicy(allow_hosts=(entry,))


# --- cloud metadata -------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["metadata.google.internal", "metadata", "instance-data", "metadata.goog"])
async def test_metadata_host_names_are_refused_before_any_lookup(host: str) -> None:
    async def must_not_resolve(name: str, port: int) -> Sequence[str]:
        raise AssertionError(f"{name} was resolved")

    with pytest.raises(ReferenceFetchError) as info:
        await check_url(f"http://{host}/computeMetadata/v1/", POLICY, must_not_resolve)
    assert info.value.reason == Reason.PRIVATE_ADDRESS
    assert "metadata" in info.value.detail


@pytest.mark.parametrize("address", ["100.100.100.200", "192.0.0.192", "169.254.170.2", "168.63.129.16"])
def test_other_providers_metadata_addresses_need_an_exact_entry(address: str) -> None:
    broad = FetchPolicy(allow_hosts=("0.0.0.0/0",))
    assert "metadata" in (address_refusal(address, broad) or "")
    assert address_refusal(address, FetchPolicy(allow_hosts=(address,))) is None


async def test_a_public_looking_metadata_address_is_refused() -> None:
    # Azure's WireServer is outside every special-purpose block: only the metadata list knows it.
    assert (
        await refused("http://cdn.example/a.png", resolver=answers("168.63.129.16")) == Reason.PRIVATE_ADDRESS
    )


@pytest.mark.parametrize(
    "host",
    ["192.0.0.9", "192.0.0.10", "192.31.196.1", "192.52.193.1", "192.175.48.1", "[2001:1::1]", "[2001:3::1]"],
)
async def test_special_blocks_marked_globally_reachable_are_still_refused(host: str) -> None:
    """Python patch releases disagree on these (their is_global tables changed); the table does not."""
    assert await refused(f"http://{host}/a.png") == Reason.PRIVATE_ADDRESS
