"""Who a loopback HTTP endpoint answers: the one rule for the gateway (gateway/web) and the
event-log sink's query endpoint (processors/eventlog/server.py).

A service bound to loopback is reachable from a browser page on another site through DNS
rebinding: the attacker's name is re-resolved to 127.0.0.1, and the browser then sends that name
as the Host header. The socket cannot tell; the Host header can. So a loopback-bound service
answers only requests whose Host is a loopback name or address (or the address it was bound to),
and refuses writes whose Origin is another site. It lives under processors/ because stages may not
import gateway/.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def host_name(host_header: str | None) -> str | None:
    """The host part of a Host header ("[::1]:80" → "::1"), lower-cased; None if unparsable."""
    if not host_header:
        return None
    try:
        parts = urlsplit(f"//{host_header}")
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return None
    return parts.hostname


def is_loopback(name: str) -> bool:
    """A loopback name or literal address (127.0.0.0/8, ::1). Only literals: resolving a name
    here is what rebinding exploits."""
    name = name.strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_allowed(host_header: str | None, bound: str = "127.0.0.1") -> bool:
    """Whether a service bound to `bound` answers a request with this Host header. Bound to a
    non-loopback address, it is meant to be reached by many names, and every Host is answered."""
    bound = bound.strip("[]").lower()
    if not is_loopback(bound):
        return True
    name = host_name(host_header)
    return name is not None and (is_loopback(name) or name == bound)


def same_origin(origin_header: str | None, host_header: str | None) -> bool:
    """Whether a write comes from this site's own pages. Browsers send Origin on cross-site posts;
    clients that send none (curl, scripts) are not a browser to abuse."""
    return origin_header is None or urlsplit(origin_header).netloc == (host_header or "")
