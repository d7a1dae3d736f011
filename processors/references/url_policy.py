"""What a reference URL may point at, decided before any byte is sent.

A reference URL comes from an upstream catalog event, so it is untrusted input: without these
checks it is a server-side request forgery primitive (cloud metadata, loopback admin ports,
internal services). Every hop of a redirect chain goes through ``check_url``; the fetcher's
connector re-checks the addresses it actually connects to, so DNS answers that change between
the check and the connect (rebinding) gain nothing. What is not public is decided by the deny
table in address_table.py (the IANA special-purpose registries and the cloud metadata endpoints),
never by the interpreter's ipaddress flags, which differ between Python patch releases.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar
from urllib.parse import urlsplit

from yarl import URL

from processors.config import ReferenceSettings
from processors.references.address_table import (
    is_metadata_hostname,
    metadata_endpoint,
    special_block,
)

MiB = 1024 * 1024

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Resolves (host, port) to IP address strings.
AddressResolver = Callable[[str, int], Awaitable[Sequence[str]]]


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
    # Per attempt, counted only while the request holds its connection slot (time spent waiting
    # for a slot to the host is not the origin being slow).
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
    # Requests in flight to one host (scheme, host, port); the rest wait, off the clock.
    per_host_concurrency: int = _CONFIGURED.per_host_concurrency
    # Downloads in flight through one fetcher, all hosts together; also waited for off the clock.
    max_concurrent_downloads: int = _CONFIGURED.max_concurrent_downloads
    # Retryable failures are retried for this long after the first one (and at most ``retries``
    # times, when that is set).
    retry_window_s: float = _CONFIGURED.retry_window_s
    retries: int | None = _CONFIGURED.retries
    backoff_initial_s: float = _CONFIGURED.backoff_initial_s
    backoff_max_s: float = _CONFIGURED.backoff_max_s
    # Decoded pixel bytes in memory at once across concurrent proofs (decoding.DecodeBudget).
    decode_budget_bytes: int = _CONFIGURED.decode_budget_bytes
    allowed_schemes: tuple[str, ...] = ("http", "https")
    # Admitted even if private or loopback: host names (exact, case-insensitive), IPs or CIDRs,
    # each optionally with a port ("minio.internal:9000", "[fd00::5]:443", "10.0.0.0/8:8080"),
    # which then admits that host on that port only.
    allow_hosts: tuple[str, ...] = tuple(_CONFIGURED.allow_hosts)
    cache_ttl_s: float = _CONFIGURED.cache_ttl_s
    user_agent: str = "Lightbox-ReferenceFetcher/1.0"

    def __post_init__(self) -> None:
        # A malformed allowlist entry is a configuration error: refuse it when the policy is
        # made (at stage start), not at the first URL.
        _allowlist(self)

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
            max_concurrent_downloads=settings.max_concurrent_downloads,
            retry_window_s=settings.retry_window_s,
            retries=settings.retries,
            backoff_initial_s=settings.backoff_initial_s,
            backoff_max_s=settings.backoff_max_s,
            decode_budget_bytes=settings.decode_budget_bytes,
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


# None: any port; else the only ports admitted.
Ports = frozenset[int] | None


@dataclass(frozen=True)
class AllowEntry:
    host: str  # a normalised host name, or an IP network in text form
    port: int | None


def parse_allow_entry(raw: str) -> AllowEntry:
    """``host``, ``host:port``, ``1.2.3.4[:port]``, ``10.0.0.0/8[:port]``, ``::1``, ``fd00::/8``,
    ``[::1]:port``. A bare IPv6 address has several colons and so never carries a port: write
    ``[v6]:port`` for that."""
    text = raw.strip()
    if not text:
        raise ValueError("empty allow_hosts entry")
    port_text: str | None = None
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ValueError(f"allow_hosts entry {raw!r}: unclosed '['")
        host, rest = text[1:close], text[close + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"allow_hosts entry {raw!r}: unexpected {rest!r} after ']'")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host = text
    port = None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"allow_hosts entry {raw!r}: port {port_text!r} is not 1-65535")
        port = int(port_text)
    if not host:
        raise ValueError(f"allow_hosts entry {raw!r} has no host")
    return AllowEntry(host, port)


@dataclass(frozen=True)
class _Allowlist:
    names: dict[str, Ports]
    networks: tuple[tuple[IPNetwork, Ports], ...]
    exact_addresses: dict[IPAddress, Ports]


K = TypeVar("K")


def _merge(table: dict[K, Ports], key: K, port: int | None) -> None:
    """Add one entry's port to a host's admitted ports (no port: every port, which wins)."""
    if key in table and table[key] is None:
        return
    table[key] = None if port is None else frozenset({*(table.get(key) or ()), port})


@lru_cache(maxsize=64)
def _allowlist(policy: FetchPolicy) -> _Allowlist:
    names: dict[str, Ports] = {}
    networks: list[tuple[IPNetwork, Ports]] = []
    exact: dict[IPAddress, Ports] = {}
    for raw in policy.allow_hosts:
        entry = parse_allow_entry(raw)
        try:
            network = ipaddress.ip_network(entry.host, strict=False)
        except ValueError:
            _merge(names, _normalise_host(entry.host), entry.port)
            # Match the IDNA form too: URLs are compared by their wire (punycode) host.
            with contextlib.suppress(ValueError):
                wire = URL.build(scheme="http", host=entry.host).raw_host or ""
                _merge(names, _normalise_host(wire), entry.port)
            continue
        networks.append((network, None if entry.port is None else frozenset({entry.port})))
        if network.num_addresses == 1:
            _merge(exact, network.network_address, entry.port)
    return _Allowlist(names, tuple(networks), exact)


def _admits(ports: Ports, port: int | None) -> bool:
    return ports is None or (port is not None and port in ports)


def host_is_allowlisted(host: str, policy: FetchPolicy, port: int | None = None) -> bool:
    """Whether the host name is allowlisted for this port (an entry without a port: any port)."""
    table = _allowlist(policy).names
    name = _normalise_host(host)
    return name in table and _admits(table[name], port)


def _normalise_host(host: str) -> str:
    return host.lower().rstrip(".")


def address_refusal(address: str, policy: FetchPolicy, port: int | None = None) -> str | None:
    """Why this resolved address may not be contacted (on ``port``), or None when it may.

    The deny table (address_table.py) decides what is not public; an allowlisted network or
    address admits it, on the entry's port when it names one. A metadata address needs an entry
    naming exactly it.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address!r} is not an IP address"
    allow = _allowlist(policy)
    endpoint = metadata_endpoint(ip)
    if endpoint is not None:
        exact = ipaddress.ip_address(endpoint.address)
        for candidate in (ip, exact):
            if candidate in allow.exact_addresses and _admits(allow.exact_addresses[candidate], port):
                return None
        return f"{ip} is a cloud metadata address ({endpoint.provider})"
    refusal = special_block(ip)
    if refusal is None:
        return None
    covering = [ports for network, ports in allow.networks if ip in network]
    if any(_admits(ports, port) for ports in covering):
        return None
    text = refusal.describe(ip)
    if covering:
        allowed = sorted({p for ports in covering for p in ports or ()})
        text += f"; allowlisted on port {', '.join(map(str, allowed))} only"
    return text


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
    allowlisted = host_is_allowlisted(host, policy, port)
    if is_metadata_hostname(host) and not allowlisted:
        # Refused by name before any lookup: outside the cloud the name may resolve to anything,
        # inside it to the credentials service.
        raise ReferenceFetchError(Reason.PRIVATE_ADDRESS, f"{host} is a cloud metadata host name")
    addresses = await _resolve(host, port, policy, resolver or system_resolve)
    if allowlisted:
        return ResolvedTarget(parsed, host, port, addresses, host_allowlisted=True)
    # All of them: a host that answers with one public and one private address would let the
    # connector pick the private one.
    for address in addresses:
        refusal = address_refusal(address, policy, port)
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
