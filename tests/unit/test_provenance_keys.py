"""The local test signing chain: what C2PA requires of it, and loading a configured one."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from processors.provenance.keys import (
    C2PA_CLAIM_SIGNING,
    ensure_test_chain,
    init_test_chain,
    load_material,
)


def test_the_test_chain_is_a_ca_and_a_signer_with_the_extensions_c2pa_requires(tmp_path: Path) -> None:
    paths = init_test_chain(tmp_path / "keys")
    signer, ca = x509.load_pem_x509_certificates(paths.chain.read_bytes())
    assert x509.load_pem_x509_certificate(paths.ca.read_bytes()) == ca
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert signer.issuer == ca.subject and signer.subject != ca.subject  # not self-signed
    assert not signer.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = signer.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    eku = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert C2PA_CLAIM_SIGNING in eku and ExtendedKeyUsageOID.EMAIL_PROTECTION in eku
    assert ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in eku
    aki = signer.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert "TEST" in signer.subject.rfc4514_string()  # any verifier shows it is a test signer


def test_the_private_key_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    paths = init_test_chain(tmp_path / "keys")
    assert stat.S_IMODE(paths.key.stat().st_mode) == 0o600
    assert not list(paths.directory.glob(".*.tmp"))


def test_an_existing_chain_is_kept_unless_forced(tmp_path: Path) -> None:
    paths = init_test_chain(tmp_path / "keys")
    first = paths.chain.read_bytes()
    with pytest.raises(FileExistsError):
        init_test_chain(tmp_path / "keys")
    assert paths.chain.read_bytes() == first
    init_test_chain(tmp_path / "keys", force=True)
    assert paths.chain.read_bytes() != first


def test_processes_starting_together_make_one_chain(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    seen: list[bytes] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        barrier.wait()
        seen.append(ensure_test_chain(directory).ca.read_bytes())

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 4 and len(set(seen)) == 1
    assert (directory / "ca.pem").read_bytes() == seen[0]


@pytest.mark.parametrize("alg", ["ES256", "ES384", "PS256"])
def test_each_algorithm_makes_a_matching_key(tmp_path: Path, alg: str) -> None:
    init_test_chain(tmp_path, alg)  # type: ignore[arg-type]
    material = load_material("", "", alg, tmp_path, create_test_chain=False)  # type: ignore[arg-type]
    assert material.is_test and material.alg == alg


def test_a_configured_chain_is_used_and_checked(tmp_path: Path) -> None:
    one, other = init_test_chain(tmp_path / "one"), init_test_chain(tmp_path / "other")
    material = load_material(str(one.chain), str(one.key), "ES256", tmp_path / "unused")
    assert not material.is_test and material.source == str(one.chain)
    assert not (tmp_path / "unused").exists()  # a configured signer never makes a test chain
    with pytest.raises(ValueError, match="does not match"):
        load_material(str(one.chain), str(other.key), "ES256", tmp_path / "unused")
    with pytest.raises(ValueError, match="cannot sign PS256"):
        load_material(str(one.chain), str(one.key), "PS256", tmp_path / "unused")
    with pytest.raises(ValueError, match="set together"):
        load_material(str(one.chain), "", "ES256", tmp_path / "unused")


def test_no_chain_and_no_permission_to_make_one_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="lightbox keys init"):
        load_material("", "", "ES256", tmp_path / "keys", create_test_chain=False)
