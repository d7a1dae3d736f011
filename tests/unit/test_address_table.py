"""The deny table (processors/references/address_table.py): every expected value here is a literal
from the IANA registries or a provider's documentation, never the interpreter's ipaddress flags
(is_global, is_private... changed between Python patch releases), so these tests mean the same
on every Python the project supports."""

from __future__ import annotations

import ast
import ipaddress
from pathlib import Path

import pytest

from processors.references import address_table
from processors.references.address_table import (
    IPV4_SPECIAL,
    IPV6_EMBEDDING,
    IPV6_SPECIAL,
    METADATA_ENDPOINTS,
    is_metadata_hostname,
    metadata_endpoint,
    special_block,
)
from processors.references.url_policy import FetchPolicy, address_refusal

ROOT = Path(__file__).resolve().parents[2]

# The entries the table must hold: prefix -> (name fragment, RFC).
REQUIRED_V4 = {
    "0.0.0.0/8": ("This network", "RFC 791"),
    "10.0.0.0/8": ("Private-Use", "RFC 1918"),
    "100.64.0.0/10": ("Shared Address Space", "RFC 6598"),
    "127.0.0.0/8": ("Loopback", "RFC 1122"),
    "169.254.0.0/16": ("Link Local", "RFC 3927"),
    "172.16.0.0/12": ("Private-Use", "RFC 1918"),
    "192.0.0.0/24": ("IETF Protocol Assignments", "RFC 6890"),
    "192.0.2.0/24": ("TEST-NET-1", "RFC 5737"),
    "192.88.99.0/24": ("6to4 Relay Anycast", "RFC 7526"),
    "192.168.0.0/16": ("Private-Use", "RFC 1918"),
    "198.18.0.0/15": ("Benchmarking", "RFC 2544"),
    "198.51.100.0/24": ("TEST-NET-2", "RFC 5737"),
    "203.0.113.0/24": ("TEST-NET-3", "RFC 5737"),
    "224.0.0.0/4": ("Multicast", "RFC 5771"),
    "240.0.0.0/4": ("Reserved", "RFC 1112"),
    "255.255.255.255/32": ("Limited Broadcast", "RFC 8190"),
}
REQUIRED_V6 = {
    "::1/128": ("Loopback", "RFC 4291"),
    "::/128": ("Unspecified", "RFC 4291"),
    "64:ff9b:1::/48": ("local-use", "RFC 8215"),
    "100::/64": ("Discard-Only", "RFC 6666"),
    "2001::/23": ("IETF Protocol Assignments", "RFC 2928"),
    "2001::/32": ("TEREDO", "RFC 4380"),
    "2001:2::/48": ("Benchmarking", "RFC 5180"),
    "2001:10::/28": ("ORCHID", "RFC 4843"),
    "2001:20::/28": ("ORCHIDv2", "RFC 7343"),
    "2001:db8::/32": ("Documentation", "RFC 3849"),
    "3fff::/20": ("Documentation", "RFC 9637"),
    "fc00::/7": ("Unique-Local", "RFC 4193"),
    "fe80::/10": ("Link-Local", "RFC 4291"),
    "ff00::/8": ("Multicast", "RFC 4291"),
}
REQUIRED_EMBEDDING = {"::ffff:0:0/96": "RFC 4291", "64:ff9b::/96": "RFC 6052", "2002::/16": "RFC 3056"}


@pytest.mark.parametrize(("prefix", "expected"), sorted({**REQUIRED_V4, **REQUIRED_V6}.items()))
def test_the_table_holds_each_registry_entry_with_its_name_and_rfc(
    prefix: str, expected: tuple[str, str]
) -> None:
    table = {block.prefix: block for block in (*IPV4_SPECIAL, *IPV6_SPECIAL)}
    assert prefix in table, f"{prefix} missing from the deny table"
    name, rfc = expected
    assert name in table[prefix].name
    assert rfc in table[prefix].rfc


def test_the_embedding_forms_are_listed_with_their_rfc() -> None:
    assert {block.prefix: block.rfc for block in IPV6_EMBEDDING} == REQUIRED_EMBEDDING


def test_every_entry_is_a_valid_network_with_a_name_and_an_rfc() -> None:
    for block in (*IPV4_SPECIAL, *IPV6_SPECIAL, *IPV6_EMBEDDING):
        assert block.network.with_prefixlen == block.prefix, f"{block.prefix} is not in canonical form"
        assert block.name and block.rfc.startswith("RFC"), block


@pytest.mark.parametrize(
    ("address", "prefix"),
    [
        ("0.1.2.3", "0.0.0.0/8"),
        ("0.0.0.0", "0.0.0.0/32"),
        ("10.255.255.255", "10.0.0.0/8"),
        ("100.64.0.1", "100.64.0.0/10"),
        ("100.127.255.254", "100.64.0.0/10"),
        ("127.8.9.10", "127.0.0.0/8"),
        ("169.254.1.1", "169.254.0.0/16"),
        ("172.31.0.1", "172.16.0.0/12"),
        ("192.0.0.1", "192.0.0.0/29"),
        ("192.0.0.100", "192.0.0.0/24"),
        ("192.0.0.9", "192.0.0.9/32"),
        ("192.0.2.7", "192.0.2.0/24"),
        ("192.88.99.1", "192.88.99.0/24"),
        ("192.88.99.2", "192.88.99.2/32"),
        ("192.168.1.1", "192.168.0.0/16"),
        ("198.19.255.255", "198.18.0.0/15"),
        ("198.51.100.1", "198.51.100.0/24"),
        ("203.0.113.200", "203.0.113.0/24"),
        ("224.0.0.1", "224.0.0.0/4"),
        ("239.255.255.250", "224.0.0.0/4"),
        ("240.0.0.1", "240.0.0.0/4"),
        ("255.255.255.254", "240.0.0.0/4"),
        ("255.255.255.255", "255.255.255.255/32"),
        ("::1", "::1/128"),
        ("::", "::/128"),
        ("::7f00:1", "::/96"),  # deprecated IPv4-compatible ::127.0.0.1
        ("64:ff9b:1::a", "64:ff9b:1::/48"),
        ("100::1", "100::/64"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "2001::/32"),  # Teredo
        ("2001:1::1", "2001:1::1/128"),
        ("2001:2::1", "2001:2::/48"),
        ("2001:1ff::1", "2001::/23"),
        ("2001:db8::1", "2001:db8::/32"),
        ("3fff:fff::1", "3fff::/20"),
        ("5f00::1", "5f00::/16"),
        ("fc00::1", "fc00::/7"),
        ("fdff:ffff::1", "fc00::/7"),
        ("fe80::1", "fe80::/10"),
        ("febf::1", "fe80::/10"),
        ("fec0::1", "fec0::/10"),
        ("ff02::1", "ff00::/8"),
    ],
)
def test_addresses_inside_a_block_are_refused_by_the_most_specific_entry(address: str, prefix: str) -> None:
    refusal = special_block(ipaddress.ip_address(address))
    assert refusal is not None, f"{address} should be refused"
    assert refusal.block.prefix == prefix
    assert prefix in refusal.describe(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address",
    [
        "93.184.215.14",
        "8.8.8.8",
        "1.1.1.1",
        "9.255.255.255",  # just below 10/8
        "11.0.0.0",  # just above 10/8
        "100.63.255.255",  # just below 100.64/10
        "100.128.0.0",  # just above
        "172.15.255.255",
        "172.32.0.0",
        "192.0.1.1",  # between 192.0.0/24 and 192.0.2/24
        "192.0.3.1",
        "192.169.0.0",
        "198.17.255.255",
        "198.20.0.0",
        "223.255.255.255",  # just below multicast
        "2606:2800:21f:cb07:6820:80da:af6b:8b2c",
        "2a00:1450:4001:80b::200e",
        "2001:200::1",  # just above 2001::/23
        "2001:db9::1",  # just above 2001:db8::/32
        "2620:4f:8001::1",
    ],
)
def test_public_addresses_are_not_refused(address: str) -> None:
    assert special_block(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("address", "embedded", "prefix"),
    [
        ("::ffff:127.0.0.1", "127.0.0.1", "127.0.0.0/8"),
        ("::ffff:10.1.2.3", "10.1.2.3", "10.0.0.0/8"),
        ("64:ff9b::a00:1", "10.0.0.1", "10.0.0.0/8"),
        ("64:ff9b::c0a8:101", "192.168.1.1", "192.168.0.0/16"),
        ("2002:7f00:1::", "127.0.0.1", "127.0.0.0/8"),
        ("2002:a9fe:a9fe::1", "169.254.169.254", "169.254.0.0/16"),
        ("2002:c000:0201::", "192.0.2.1", "192.0.2.0/24"),
    ],
)
def test_ipv6_forms_that_embed_a_refused_ipv4_address_are_refused(
    address: str, embedded: str, prefix: str
) -> None:
    refusal = special_block(ipaddress.ip_address(address))
    assert refusal is not None
    assert str(refusal.embedded) == embedded
    assert refusal.block.prefix == prefix
    assert embedded in refusal.describe(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["::ffff:93.184.215.14", "64:ff9b::808:808", "2002:5db8:d70e::1"])
def test_ipv6_forms_that_embed_a_public_ipv4_address_are_public(address: str) -> None:
    assert special_block(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize("address", ["1::1", "4000::1", "8000::1", "e000::1", "fe00::1"])
def test_ipv6_outside_global_unicast_is_refused(address: str) -> None:
    refusal = special_block(ipaddress.ip_address(address))
    assert refusal is not None and "2000::/3" in refusal.block.prefix


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",
        "fd00:ec2::254",
        "169.254.170.2",
        "169.254.170.23",
        "fd00:ec2::23",
        "fd20:ce::254",
        "100.100.100.200",
        "192.0.0.192",
        "168.63.129.16",
        "fd00:c1::a9fe:a9fe",
        "169.254.0.23",
        "169.254.42.42",
        "fd00:42::42",
        "fd00:a9fe:a9fe::1",
    ],
)
def test_cloud_metadata_addresses_are_listed_and_refused_under_a_covering_allowlist(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert metadata_endpoint(ip) is not None
    covering = "0.0.0.0/0" if ip.version == 4 else "::/0"
    refusal = address_refusal(address, FetchPolicy(allow_hosts=(covering,)))
    assert refusal is not None and "metadata" in refusal
    assert (
        address_refusal(address, FetchPolicy(allow_hosts=(address if ip.version == 4 else f"[{address}]",)))
        is None
    )


def test_the_metadata_list_has_one_entry_per_address() -> None:
    addresses = [ipaddress.ip_address(entry.address) for entry in METADATA_ENDPOINTS]
    assert len(addresses) == len(set(addresses))


def test_a_metadata_address_in_an_ipv6_form_is_still_the_metadata_address() -> None:
    assert metadata_endpoint(ipaddress.ip_address("::ffff:169.254.169.254")) is not None
    assert metadata_endpoint(ipaddress.ip_address("64:ff9b::a9fe:a9fe")) is not None
    # The Azure WireServer looks public: only the metadata list refuses it.
    assert special_block(ipaddress.ip_address("168.63.129.16")) is None
    assert "metadata" in (address_refusal("::ffff:168.63.129.16", FetchPolicy()) or "")


@pytest.mark.parametrize(
    "host",
    ["metadata.google.internal", "METADATA.GOOGLE.INTERNAL.", "metadata", "metadata.goog", "instance-data"],
)
def test_metadata_host_names(host: str) -> None:
    assert is_metadata_hostname(host)


def test_ordinary_host_names_are_not_metadata_names() -> None:
    assert not is_metadata_hostname("cdn.example.com")
    assert not is_metadata_hostname("metadata.example.com")


def test_the_table_and_the_url_policy_read_no_ipaddress_flag() -> None:
    """The decisions come from the table, never from is_global/is_private and friends."""
    flags = {
        "is_global",
        "is_private",
        "is_reserved",
        "is_loopback",
        "is_link_local",
        "is_multicast",
        "is_unspecified",
        "is_site_local",
        "ipv4_mapped",
        "sixtofour",
        "teredo",
    }
    for module in (address_table.__file__, ROOT / "processors/references/url_policy.py"):
        tree = ast.parse(Path(module).read_text())
        used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)} & flags
        assert not used, f"{module} reads ipaddress flags {used}"
