"""Signing keys: the local TEST certificate chain, and loading whichever chain is configured.

C2PA signers need an X.509 certificate chain, not a bare key: a signer certificate that is not
a CA and not self-signed, with the digitalSignature key usage and an extended key usage C2PA
accepts (here id-kp-emailProtection and c2pa-kp-claimSigning), issued by a CA a verifier can be
told to trust. ``init_test_chain`` makes exactly that, locally: a throw-away CA and one signer
certificate. It is for development and tests: nobody else trusts that CA, and its private key is
discarded once the signer certificate is issued. Production configures a real chain
(``provenance.cert_path`` / ``provenance.key_path``), issued by a CA on the C2PA trust list.

Layout of a test chain directory (default <home>/keys/):
    ca.pem        the test CA's certificate (what `lightbox verify` trusts by default)
    signer.pem    the signer's certificate followed by the CA's (the chain c2pa embeds)
    signer.key    the signer's private key, PKCS#8 PEM, mode 0600
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

if TYPE_CHECKING:
    from processors.config import Settings

Alg = Literal["ES256", "ES384", "PS256"]
ALGS: tuple[str, ...] = ("ES256", "ES384", "PS256")

CA_FILE = "ca.pem"
CHAIN_FILE = "signer.pem"
KEY_FILE = "signer.key"
_LOCK_FILE = ".init.lock"

# C2PA 2.x's own extended key usage for claim signers. c2pa 0.91 refuses a signer whose EKUs
# include none it lists (id-kp-documentSigning alone is refused), so emailProtection, which
# every C2PA implementation accepts, goes beside it.
C2PA_CLAIM_SIGNING = ObjectIdentifier("1.3.6.1.4.1.62558.2.1")
TEST_ORGANISATION = "Lightbox TEST - not for production"

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class ChainPaths:
    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / CA_FILE

    @property
    def chain(self) -> Path:
        return self.directory / CHAIN_FILE

    @property
    def key(self) -> Path:
        return self.directory / KEY_FILE

    def complete(self) -> bool:
        return self.ca.is_file() and self.chain.is_file() and self.key.is_file()


@dataclass(frozen=True)
class SigningMaterial:
    """What a C2PA signer is made of."""

    chain_pem: bytes  # signer certificate first, then its issuers
    key_pem: bytes
    alg: Alg
    source: str  # where it came from, for logs and `lightbox keys show`
    is_test: bool


def init_test_chain(
    directory: Path, alg: Alg = "ES256", *, force: bool = False, valid_days: int = 825
) -> ChainPaths:
    """Make a test CA and a signer certificate under ``directory``; FileExistsError when a chain
    is there already (``force`` replaces it)."""
    paths = ChainPaths(directory)
    if paths.complete() and not force:
        raise FileExistsError(f"a signing chain already exists in {directory} (force to replace it)")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = _name("Lightbox TEST CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=valid_days + 30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    signer_key = _signer_key(alg)
    signer_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("Lightbox TEST signer"))
        .issuer_name(ca_name)
        .public_key(signer_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION, C2PA_CLAIM_SIGNING]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(signer_key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA384())
    )
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    _write(paths.key, _key_pem(signer_key), mode=0o600)
    _write(paths.chain, signer_cert.public_bytes(serialization.Encoding.PEM) + ca_pem, mode=0o644)
    # Last: a complete() chain is one whose CA file exists, so a crash midway leaves none.
    _write(paths.ca, ca_pem, mode=0o644)
    return paths


def ensure_test_chain(directory: Path, alg: Alg = "ES256") -> ChainPaths:
    """The test chain in ``directory``, made first if there is none. Safe when several processes
    start at once: one makes it under a lock, the others then find it."""
    paths = ChainPaths(directory)
    if paths.complete():
        return paths
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(directory / _LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not paths.complete():
            init_test_chain(directory, alg, force=True)
    return paths


def load_material(
    cert_path: str, key_path: str, alg: Alg, test_directory: Path, *, create_test_chain: bool = True
) -> SigningMaterial:
    """The configured chain and key; with neither configured, the test chain in ``test_directory``
    (made when missing and ``create_test_chain``). One configured without the other is an error:
    a half-configured production signer must not fall back to a test key."""
    if bool(cert_path) != bool(key_path):
        raise ValueError("provenance.cert_path and provenance.key_path must be set together")
    if cert_path:
        chain, key = Path(cert_path).expanduser(), Path(key_path).expanduser()
        material = SigningMaterial(chain.read_bytes(), key.read_bytes(), alg, str(chain), is_test=False)
    else:
        paths = ensure_test_chain(test_directory, alg) if create_test_chain else ChainPaths(test_directory)
        if not paths.complete():
            raise FileNotFoundError(f"no signing chain in {test_directory}: run `lightbox keys init`")
        material = SigningMaterial(
            paths.chain.read_bytes(), paths.key.read_bytes(), alg, str(paths.chain), True
        )
    check_material(material)
    return material


def test_chain_dir(settings: Settings) -> Path:
    """Where `lightbox keys init` keeps the local TEST chain, and where signing and verifying
    look for it when no real one is configured."""
    return settings.home / "keys"


def trust_anchors_of(settings: Settings, explicit: str | None = None) -> tuple[str | None, str]:
    """trust_anchors() for these settings."""
    return trust_anchors(settings.provenance.trust_anchors_path, test_chain_dir(settings), explicit)


def trust_anchors(
    trust_anchors_path: str, test_directory: Path, explicit: str | None = None
) -> tuple[str | None, str]:
    """The PEM a verifier here trusts and where it came from: ``explicit`` (a --trust path),
    then ``provenance.trust_anchors_path``, then the local test CA (so files signed on this
    machine verify here, and only here); (None, why) when there is none."""
    for path, origin in ((explicit, "--trust"), (trust_anchors_path, "provenance.trust_anchors_path")):
        if path:
            return Path(path).expanduser().read_text(), f"{origin} {path}"
    local = ChainPaths(test_directory).ca
    if local.is_file():
        return local.read_text(), f"the local test CA {local}"
    return None, "nothing (no --trust, no provenance.trust_anchors_path, no local test CA)"


def check_material(material: SigningMaterial) -> None:
    """ValueError unless the key is the signer certificate's and suits ``alg``: a wrong pairing
    otherwise surfaces as an unhelpful error from deep inside the first signature."""
    certs = x509.load_pem_x509_certificates(material.chain_pem)
    key = serialization.load_pem_private_key(material.key_pem, password=None)
    leaf = certs[0].public_key()
    if leaf.public_numbers() != key.public_key().public_numbers():  # type: ignore[union-attr]
        raise ValueError(f"{material.source}: the private key does not match the signer certificate")
    expected = rsa.RSAPrivateKey if material.alg.startswith("PS") else ec.EllipticCurvePrivateKey
    if not isinstance(key, expected):
        raise ValueError(f"{material.source}: a {type(key).__name__} cannot sign {material.alg}")


def describe_chain(chain_pem: bytes) -> list[dict[str, str]]:
    """Subject, issuer and validity of each certificate of a chain, signer first."""
    return [
        {
            "subject": cert.subject.rfc4514_string(),
            "issuer": cert.issuer.rfc4514_string(),
            "not_before": cert.not_valid_before_utc.isoformat(),
            "not_after": cert.not_valid_after_utc.isoformat(),
        }
        for cert in x509.load_pem_x509_certificates(chain_pem)
    ]


def _signer_key(alg: Alg) -> PrivateKey:
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "ES384":
        return ec.generate_private_key(ec.SECP384R1())
    if alg == "PS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    raise ValueError(f"unsupported signing algorithm {alg!r} (one of {', '.join(ALGS)})")


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, TEST_ORGANISATION),
        ]
    )


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    # Written beside and renamed: a reader never sees half a key, and the mode is set before
    # the key bytes exist anywhere under the final name.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
