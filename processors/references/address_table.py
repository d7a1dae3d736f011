"""The addresses a reference download may never reach, as data: the IANA special-purpose address
registries for IPv4 and IPv6, the multicast and reserved spaces, and every known cloud
metadata endpoint.

Why a table of our own and not ``ipaddress``'s ``is_global``/``is_private``: those flags are
tables inside the interpreter, and they changed between Python patch releases (3.11.10, 3.12.4
and 3.13 corrected 192.0.0.0/24, 2001::/23 and others), so the same URL was admitted or refused
depending on the patch level a worker happened to run. This module reads only the bits of an
address; nothing in it consults an ``is_*`` flag, and tests/unit/test_address_table.py checks that.

Sources: https://www.iana.org/assignments/iana-ipv4-special-registry,
https://www.iana.org/assignments/iana-ipv6-special-registry, the IPv4 multicast and IPv6 address
space registries, and each cloud provider's metadata documentation (named per entry).

Every special-purpose block is denied, including the few the registry marks globally reachable
(AS112, AMT, the PCP/TURN anycast addresses, ORCHIDv2, DETs): none of them serves catalog
images, and an exception for them would only be one more thing to get wrong.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import cache

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class SpecialBlock:
    prefix: str
    name: str
    rfc: str
    # What the IANA registry says ("Globally Reachable"); recorded, not used: every block is denied.
    globally_reachable: bool = False

    @property
    def network(self) -> IPNetwork:
        return _network(self.prefix)


@dataclass(frozen=True)
class EmbeddingBlock:
    """IPv6 forms that deliver to an IPv4 address: judged by that IPv4 address."""

    prefix: str
    name: str
    rfc: str
    # Where the IPv4 address sits: the low 32 bits (shift 0), or for 6to4 bits 16..48 (shift 80).
    shift: int = 0

    @property
    def network(self) -> ipaddress.IPv6Network:
        network = _network(self.prefix)
        assert isinstance(network, ipaddress.IPv6Network)
        return network


@dataclass(frozen=True)
class MetadataEndpoint:
    address: str
    provider: str


# --- IPv4 ----------------------------------------------------------------------------------

IPV4_SPECIAL: tuple[SpecialBlock, ...] = (
    SpecialBlock("0.0.0.0/8", '"This network"', "RFC 791 section 3.2"),
    SpecialBlock("0.0.0.0/32", '"This host on this network"', "RFC 1122 section 3.2.1.3"),
    SpecialBlock("10.0.0.0/8", "Private-Use", "RFC 1918"),
    SpecialBlock("100.64.0.0/10", "Shared Address Space", "RFC 6598"),
    SpecialBlock("127.0.0.0/8", "Loopback", "RFC 1122 section 3.2.1.3"),
    SpecialBlock("169.254.0.0/16", "Link Local", "RFC 3927"),
    SpecialBlock("172.16.0.0/12", "Private-Use", "RFC 1918"),
    SpecialBlock("192.0.0.0/24", "IETF Protocol Assignments", "RFC 6890 section 2.1"),
    SpecialBlock("192.0.0.0/29", "IPv4 Service Continuity Prefix", "RFC 7335"),
    SpecialBlock("192.0.0.8/32", "IPv4 dummy address", "RFC 7600"),
    SpecialBlock("192.0.0.9/32", "Port Control Protocol Anycast", "RFC 7723", globally_reachable=True),
    SpecialBlock(
        "192.0.0.10/32", "Traversal Using Relays around NAT Anycast", "RFC 8155", globally_reachable=True
    ),
    SpecialBlock("192.0.0.170/32", "NAT64/DNS64 Discovery", "RFC 8880, RFC 7050 section 2.2"),
    SpecialBlock("192.0.0.171/32", "NAT64/DNS64 Discovery", "RFC 8880, RFC 7050 section 2.2"),
    SpecialBlock("192.0.2.0/24", "Documentation (TEST-NET-1)", "RFC 5737"),
    SpecialBlock("192.31.196.0/24", "AS112-v4", "RFC 7535", globally_reachable=True),
    SpecialBlock("192.52.193.0/24", "AMT", "RFC 7450", globally_reachable=True),
    SpecialBlock("192.88.99.0/24", "Deprecated (6to4 Relay Anycast)", "RFC 7526"),
    SpecialBlock("192.88.99.2/32", "6a44-relay anycast address", "RFC 6751"),
    SpecialBlock("192.168.0.0/16", "Private-Use", "RFC 1918"),
    SpecialBlock("192.175.48.0/24", "Direct Delegation AS112 Service", "RFC 7534", globally_reachable=True),
    SpecialBlock("198.18.0.0/15", "Benchmarking", "RFC 2544"),
    SpecialBlock("198.51.100.0/24", "Documentation (TEST-NET-2)", "RFC 5737"),
    SpecialBlock("203.0.113.0/24", "Documentation (TEST-NET-3)", "RFC 5737"),
    # Not in the special-purpose registry: the IPv4 multicast address space registry.
    SpecialBlock("224.0.0.0/4", "Multicast", "RFC 5771"),
    SpecialBlock("240.0.0.0/4", "Reserved", "RFC 1112 section 4"),
    SpecialBlock("255.255.255.255/32", "Limited Broadcast", "RFC 8190, RFC 919 section 7"),
)

# --- IPv6 ----------------------------------------------------------------------------------

IPV6_EMBEDDING: tuple[EmbeddingBlock, ...] = (
    # ::ffff:127.0.0.1 is 127.0.0.1 to a dual-stack socket.
    EmbeddingBlock("::ffff:0:0/96", "IPv4-mapped Address", "RFC 4291"),
    # The well-known NAT64 prefix: a translator delivers to the embedded (last 32 bits) address.
    EmbeddingBlock("64:ff9b::/96", "IPv4-IPv6 Translat.", "RFC 6052"),
    # 6to4: 2002:AABB:CCDD::/48 relays to AA.BB.CC.DD.
    EmbeddingBlock("2002::/16", "6to4", "RFC 3056", shift=80),
)

IPV6_SPECIAL: tuple[SpecialBlock, ...] = (
    SpecialBlock("::1/128", "Loopback Address", "RFC 4291"),
    SpecialBlock("::/128", "Unspecified Address", "RFC 4291"),
    # Deprecated, but a stack that still honours it reaches the embedded IPv4 address.
    SpecialBlock("::/96", "IPv4-Compatible Address (deprecated)", "RFC 4291 section 2.5.5.1"),
    SpecialBlock("::ffff:0:0:0/96", "IPv4-translated Address", "RFC 2765 section 2.1"),
    SpecialBlock("64:ff9b:1::/48", "IPv4-IPv6 Translat. (local-use)", "RFC 8215"),
    SpecialBlock("100::/64", "Discard-Only Address Block", "RFC 6666"),
    SpecialBlock("100:0:0:1::/64", "Dummy IPv6 Prefix", "RFC 9780"),
    SpecialBlock("2001::/23", "IETF Protocol Assignments", "RFC 2928"),
    SpecialBlock("2001::/32", "TEREDO", "RFC 4380, RFC 8190"),
    SpecialBlock("2001:1::1/128", "Port Control Protocol Anycast", "RFC 7723", globally_reachable=True),
    SpecialBlock("2001:1::2/128", "TURN Anycast", "RFC 8155", globally_reachable=True),
    SpecialBlock(
        "2001:1::3/128", "DNS-SD Service Registration Protocol Anycast", "RFC 9665", globally_reachable=True
    ),
    SpecialBlock("2001:2::/48", "Benchmarking", "RFC 5180, RFC Errata 1752"),
    SpecialBlock("2001:3::/32", "AMT", "RFC 7450", globally_reachable=True),
    SpecialBlock("2001:4:112::/48", "AS112-v6", "RFC 7535", globally_reachable=True),
    SpecialBlock("2001:10::/28", "Deprecated (previously ORCHID)", "RFC 4843"),
    SpecialBlock("2001:20::/28", "ORCHIDv2", "RFC 7343", globally_reachable=True),
    SpecialBlock(
        "2001:30::/28",
        "Drone Remote ID Protocol Entity Tags (DETs) Prefix",
        "RFC 9374",
        globally_reachable=True,
    ),
    SpecialBlock("2001:db8::/32", "Documentation", "RFC 3849"),
    SpecialBlock("2620:4f:8000::/48", "Direct Delegation AS112 Service", "RFC 7534", globally_reachable=True),
    SpecialBlock("3fff::/20", "Documentation", "RFC 9637"),
    SpecialBlock("5f00::/16", "Segment Routing (SRv6) SIDs", "RFC 9602"),
    SpecialBlock("fc00::/7", "Unique-Local", "RFC 4193, RFC 8190"),
    SpecialBlock("fe80::/10", "Link-Local Unicast", "RFC 4291"),
    # Not in the special-purpose registry: deprecated site-local, and multicast.
    SpecialBlock("fec0::/10", "Site-Local (deprecated)", "RFC 3879"),
    SpecialBlock("ff00::/8", "Multicast", "RFC 4291"),
)

# The IPv6 Address Space registry allocates only this block as Global Unicast; everything outside
# it is reserved by the IETF or special (the blocks above), never a public web server.
IPV6_GLOBAL_UNICAST = SpecialBlock("2000::/3", "Global Unicast", "RFC 4291 section 2.4")

# --- cloud metadata ------------------------------------------------------------------------
# Refused even where an allowlisted network covers them: only an allowlist entry naming the exact
# address admits one. Most sit in blocks denied anyway; the list is what keeps a broad allowlist
# entry (169.254.0.0/16, fd00::/8, 100.64.0.0/10) from exposing credentials, and it covers the
# one that looks public (Azure's WireServer).

METADATA_ENDPOINTS: tuple[MetadataEndpoint, ...] = (
    MetadataEndpoint(
        "169.254.169.254",
        "instance metadata: AWS EC2, Google Cloud, Azure IMDS, Oracle Cloud, OpenStack, DigitalOcean, "
        "Hetzner, Linode, Vultr, IBM Cloud, Huawei Cloud",
    ),
    MetadataEndpoint("fd00:ec2::254", "AWS EC2 instance metadata (IPv6)"),
    MetadataEndpoint("169.254.170.2", "AWS ECS task metadata and credentials"),
    MetadataEndpoint("169.254.170.23", "AWS EKS Pod Identity Agent"),
    MetadataEndpoint("fd00:ec2::23", "AWS EKS Pod Identity Agent (IPv6)"),
    MetadataEndpoint("fd20:ce::254", "Google Cloud metadata server (IPv6)"),
    MetadataEndpoint("168.63.129.16", "Azure WireServer (platform agent endpoint)"),
    MetadataEndpoint("100.100.100.200", "Alibaba Cloud ECS metadata"),
    MetadataEndpoint("192.0.0.192", "Oracle Cloud Infrastructure metadata"),
    MetadataEndpoint("fd00:c1::a9fe:a9fe", "Oracle Cloud Infrastructure metadata (IPv6)"),
    MetadataEndpoint("169.254.0.23", "Tencent Cloud metadata"),
    MetadataEndpoint("169.254.42.42", "Scaleway metadata"),
    MetadataEndpoint("fd00:42::42", "Scaleway metadata (IPv6)"),
    MetadataEndpoint("fd00:a9fe:a9fe::1", "Linode/Akamai metadata (IPv6)"),
)

# Host names of metadata services: refused before any lookup (a resolver inside the cloud answers
# them with the addresses above; one outside may answer anything).
METADATA_HOSTNAMES: frozenset[str] = frozenset(
    {
        "metadata",  # Google Cloud's short name
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",  # AWS EC2
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
        "api.metadata.cloud.ibm.com",
        "metadata.platformequinix.com",
        "metadata.packet.net",
    }
)


# --- lookups -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """Why an address is not public: the most specific block that holds it."""

    block: SpecialBlock
    via: EmbeddingBlock | None = None  # the IPv6 form that embedded the refused IPv4 address
    embedded: ipaddress.IPv4Address | None = None

    def describe(self, address: IPAddress) -> str:
        text = f"{address} is in {self.block.prefix} ({self.block.name}, {self.block.rfc})"
        if self.via is not None:
            text = (
                f"{address} embeds {self.embedded} ({self.via.name}, {self.via.prefix}), which is in "
                f"{self.block.prefix} ({self.block.name}, {self.block.rfc})"
            )
        return text


def special_block(address: IPAddress) -> Refusal | None:
    """The refusal for a non-public address, or None when the address is public."""
    if isinstance(address, ipaddress.IPv4Address):
        block = _most_specific(_v4_table(), address)
        return Refusal(block) if block else None
    embedding = _embedding(address)
    if embedding is not None:
        via, v4 = embedding
        inner = special_block(v4)
        return Refusal(inner.block, via, v4) if inner else None
    block = _most_specific(_v6_table(), address)
    if block is not None:
        return Refusal(block)
    if address not in IPV6_GLOBAL_UNICAST.network:
        return Refusal(SpecialBlock("outside 2000::/3", "not Global Unicast", IPV6_GLOBAL_UNICAST.rfc))
    return None


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address delivers to (mapped, NAT64, 6to4), if any."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    found = _embedding(address)
    return found[1] if found else None


def metadata_endpoint(address: IPAddress) -> MetadataEndpoint | None:
    """The metadata service at this address, or at the IPv4 address it embeds."""
    table = _metadata_table()
    hit = table.get(address)
    if hit is None:
        inner = embedded_ipv4(address)
        hit = table.get(inner) if inner is not None else None
    return hit


def is_metadata_hostname(host: str) -> bool:
    return host.lower().rstrip(".") in METADATA_HOSTNAMES


def _embedding(address: ipaddress.IPv6Address) -> tuple[EmbeddingBlock, ipaddress.IPv4Address] | None:
    for block in IPV6_EMBEDDING:
        if address in block.network:
            return block, ipaddress.IPv4Address((int(address) >> block.shift) & 0xFFFFFFFF)
    return None


def _most_specific(table: tuple[SpecialBlock, ...], address: IPAddress) -> SpecialBlock | None:
    # Sorted longest prefix first, so the first hit names the most specific block.
    return next((block for block in table if address in block.network), None)


@cache
def _network(prefix: str) -> IPNetwork:
    return ipaddress.ip_network(prefix)


@cache
def _v4_table() -> tuple[SpecialBlock, ...]:
    return tuple(sorted(IPV4_SPECIAL, key=lambda b: -b.network.prefixlen))


@cache
def _v6_table() -> tuple[SpecialBlock, ...]:
    return tuple(sorted(IPV6_SPECIAL, key=lambda b: -b.network.prefixlen))


@cache
def _metadata_table() -> dict[IPAddress, MetadataEndpoint]:
    return {ipaddress.ip_address(entry.address): entry for entry in METADATA_ENDPOINTS}
