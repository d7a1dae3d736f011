"""What a reference URL may point at, decided before any byte is sent.

A reference URL comes from an upstream catalog event, so it is untrusted input: without these
checks it is a server-side request forgery primitive (cloud metadata, loopback admin ports,
internal services). Every hop of a redirect chain goes through ``check_url``; the fetcher's
connector re-checks the addresses it actually connects to, so DNS answers that change between
the check and the connect (rebinding) gain nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from yarl import URL

from processors.config import ReferenceSettings

MiB = 1024 * 1024

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Resolves (host, port) to IP address strings.
AddressResolver = Callable[[str, int], Awaitable[Sequence[str]]]

# Cloud instance-metadata endpoints (AWS/GCP/Azure/OpenStack IPv4, AWS IPv6). Refused even when a
# broader allowlisted network covers them: only listing the exact address admits one.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)


class Reason:
    """Machine-readable reason codes carried by ReferenceFetchError (plus ``http_<status>``)."""

    INVALID_URL = "invalid_url"
    SCHEME_NOT_ALLOWED = "scheme_not_allowed"
    CREDENTIALS_IN_URL = "credentials_in_url"
    URL_TOO_LONG = "url_too_long"
    MISSING_HOST = "missing_host"
    UNRESOLVABLE_HOST = "unresolvable_host"
    PRIVATE_ADDRESS = "private_address"
    CONNECTION_ERROR = "connection_error"
    TLS_ERROR = "tls_error"
    BAD_RESPONSE = "bad_response"
    TIMEOUT = "timeout"
    SLOW_BODY = "slow_body"
    HTTP_5XX = "http_5xx"
    TOO_MANY_REDIRECTS = "too_many_redirects"
    BAD_REDIRECT = "bad_redirect"
    TOO_LARGE = "too_large"
    EMPTY_BODY = "empty_body"
    NOT_AN_IMAGE = "not_an_image"
    SVG_NOT_ALLOWED = "svg_not_allowed"
    UNSUPPORTED_FORMAT = "unsupported_format"
    CORRUPT_IMAGE = "corrupt_image"
    DECOMPRESSION_BOMB = "decompression_bomb"

    @staticmethod
    def http_status(status: int) -> str:
        """4xx keep their exact code (http_404, http_403); every 5xx is one retryable class."""
        return Reason.HTTP_5XX if status >= 500 else f"http_{status}"


class ReferenceFetchError(Exception):
    """A reference that cannot be used; ``reason`` is stable and safe to aggregate on."""

    def __init__(self, reason: str, detail: str = "", *, retryable: bool = False) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.retryable = retryable


# The limits configuration names (processors.config.ReferenceSettings) default to the same values
# here, so a FetchPolicy() in a test or tool is the policy a stage runs with by default.
_CONFIGURED = ReferenceSettings()


@dataclass(frozen=True)
class FetchPolicy:
    connect_timeout_s: float = _CONFIGURED.connect_timeout_s
    # Per attempt; a fetch makes at most 1 + retries attempts.
    total_timeout_s: float = _CONFIGURED.total_timeout_s
    # No byte for this long mid-response: the connection is considered dead (retryable).
    read_timeout_s: float = 10.0
    # After the grace period, a body arriving slower than this is cut off as slow_body: a server
    # dripping a byte a second must not hold a worker for the whole total timeout.
    min_body_bytes_per_s: float = 16 * 1024
    slow_body_grace_s: float = 2.0
    max_bytes: int = _CONFIGURED.max_bytes
    max_redirects: int = _CONFIGURED.max_redirects
    max_pixels: int = _CONFIGURED.max_pixels
    max_url_length: int = 2048
    per_host_concurrency: int = _CONFIGURED.per_host_concurrency
    retries: int = _CONFIGURED.retries
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 5.0
    allowed_schemes: tuple[str, ...] = ("http", "https")
    # Host names (exact, case-insensitive) or IPs/CIDRs admitted even if private or loopback.
    allow_hosts: tuple[str, ...] = tuple(_CONFIGURED.allow_hosts)
    cache_ttl_s: float = _CONFIGURED.cache_ttl_s
    user_agent: str = "Lightbox-ReferenceFetcher/1.0"

    @classmethod
    def from_settings(cls, settings: ReferenceSettings) -> FetchPolicy:
        """The policy a references stage runs with; what configuration does not name keeps its default."""
        return cls(
            allow_hosts=tuple(settings.allow_hosts),
            connect_timeout_s=settings.connect_timeout_s,
            total_timeout_s=settings.total_timeout_s,
            max_bytes=settings.max_bytes,
            max_redirects=settings.max_redirects,
            max_pixels=settings.max_pixels,
            per_host_concurrency=settings.per_host_concurrency,
            retries=settings.retries,
            cache_ttl_s=settings.cache_ttl_s,
        )


@dataclass(frozen=True)
class ResolvedTarget:
    url: URL
    host: str
    port: int
    addresses: tuple[str, ...]
    # True when the host name itself is allowlisted (then its addresses are not inspected).
    host_allowlisted: bool


@dataclass(frozen=True)
class _Allowlist:
    names: frozenset[str]
    networks: tuple[IPNetwork, ...]
    exact_addresses: frozenset[IPAddress]


@lru_cache(maxsize=64)
def _allowlist(policy: FetchPolicy) -> _Allowlist:
    names: set[str] = set()
    networks: list[IPNetwork] = []
    exact: set[IPAddress] = set()
    for entry in policy.allow_hosts:
        try:
            network = ipaddress.ip_network(entry.strip("[]"), strict=False)
        except ValueError:
            names.add(_normalise_host(entry))
            # Match the IDNA form too: URLs are compared by their wire (punycode) host.
            with contextlib.suppress(ValueError):
                names.add(_normalise_host(URL.build(scheme="http", host=entry).raw_host or ""))
            continue
        networks.append(network)
        if network.num_addresses == 1:
            exact.add(network.network_address)
    return _Allowlist(frozenset(names), tuple(networks), frozenset(exact))


def host_is_allowlisted(host: str, policy: FetchPolicy) -> bool:
    return _normalise_host(host) in _allowlist(policy).names


def _normalise_host(host: str) -> str:
    return host.lower().rstrip(".")


def address_refusal(address: str, policy: FetchPolicy) -> str | None:
    """Why this resolved address may not be contacted, or None when it may."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address!r} is not an IP address"
    ip = _embedded_ipv4(ip) or ip
    allow = _allowlist(policy)
    if ip in METADATA_ADDRESSES:
        return None if ip in allow.exact_addresses else f"{ip} is a cloud metadata address"
    if any(ip in network for network in allow.networks):
        return None
    kind = _non_public_kind(ip)
    return f"{ip} is {kind}" if kind else None


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """IPv6 forms that deliver to an IPv4 address (mapped, NAT64, 6to4, Teredo) are judged by
    that IPv4 address: ::ffff:127.0.0.1 reaches 127.0.0.1."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def _non_public_kind(ip: IPAddress) -> str | None:
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
        # Catches what the named classes miss, e.g. 100.64.0.0/10 carrier-grade NAT.
        ("not globally routable", not ip.is_global),
    )
    return next((name for name, hit in checks if hit), None)


async def system_resolve(host: str, port: int) -> list[str]:
    """getaddrinfo in the loop's executor: every address the host resolves to."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def parse_url(url: str, policy: FetchPolicy) -> URL:
    """Syntax-level checks that need no network."""
    if len(url) > policy.max_url_length:
        raise ReferenceFetchError(Reason.URL_TOO_LONG, f"{len(url)} characters > {policy.max_url_length}")
    # Whitespace and control characters are how parser differentials start; no valid
    # reference URL needs them unencoded.
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise ReferenceFetchError(Reason.INVALID_URL, "whitespace or control character in URL")
    try:
        parsed = URL(url)
        scheme = parsed.scheme.lower()
        host = parsed.raw_host
        user, password = parsed.user, parsed.password
        port = parsed.port
        netloc = urlsplit(url).netloc
    except (ValueError, TypeError, UnicodeError) as exc:
        raise ReferenceFetchError(Reason.INVALID_URL, str(exc)) from exc
    if scheme not in policy.allowed_schemes:
        raise ReferenceFetchError(Reason.SCHEME_NOT_ALLOWED, f"scheme {scheme or '(none)'!r}")
    # yarl drops an empty userinfo ("http://@host"); the raw netloc still shows it.
    if user is not None or password is not None or "@" in netloc:
        raise ReferenceFetchError(Reason.CREDENTIALS_IN_URL, "userinfo in URL authority")
    if not host:
        raise ReferenceFetchError(Reason.MISSING_HOST, "URL has no host")
    if port is None:
        raise ReferenceFetchError(Reason.INVALID_URL, "no port for scheme")
    return parsed


async def check_url(
    url: str | URL, policy: FetchPolicy, resolver: AddressResolver | None = None
) -> ResolvedTarget:
    """Refuse the URL unless its scheme, form and every resolved address are acceptable."""
    parsed = parse_url(str(url), policy)
    # The wire form (punycode): what getaddrinfo and the connector see.
    host = parsed.raw_host
    port = parsed.port
    assert host is not None and port is not None  # parse_url guarantees both
    addresses = await _resolve(host, port, policy, resolver or system_resolve)
    if host_is_allowlisted(host, policy):
        return ResolvedTarget(parsed, host, port, addresses, host_allowlisted=True)
    # All of them: a host that answers with one public and one private address would let the
    # connector pick the private one.
    for address in addresses:
        refusal = address_refusal(address, policy)
        if refusal:
            raise ReferenceFetchError(Reason.PRIVATE_ADDRESS, f"{host}: {refusal}")
    return ResolvedTarget(parsed, host, port, addresses, host_allowlisted=False)


async def _resolve(host: str, port: int, policy: FetchPolicy, resolver: AddressResolver) -> tuple[str, ...]:
    try:
        async with asyncio.timeout(policy.connect_timeout_s):
            addresses = tuple(await resolver(host, port))
    except TimeoutError as exc:
        raise ReferenceFetchError(
            Reason.TIMEOUT,
            f"resolving {host} took over {policy.connect_timeout_s}s",
            retryable=True,
        ) from exc
    except socket.gaierror as exc:
        # A temporary DNS failure may heal; a name that does not exist will not.
        retryable = exc.errno in (socket.EAI_AGAIN, getattr(socket, "EAI_SYSTEM", None))
        raise ReferenceFetchError(Reason.UNRESOLVABLE_HOST, f"{host}: {exc}", retryable=retryable) from exc
    except OSError as exc:
        raise ReferenceFetchError(Reason.UNRESOLVABLE_HOST, f"{host}: {exc}", retryable=True) from exc
    if not addresses:
        raise ReferenceFetchError(Reason.UNRESOLVABLE_HOST, f"{host}: no addresses")
    return addresses
