"""API tokens: who may call the HTTP gateway, and as which role (`lightbox tokens`).

A token is shown once, when it is made, as ``lbx_<id>_<secret>``. The id is public (it names the
token in listings and revocations, and lets a check find the one record to compare against); the
secret is never stored: only its scrypt hash, under a salt of its own. The records live in one
JSON file under the gateway's home (settings.gateway.tokens_file, mode 0600), not in object
storage: every stage holds the storage credentials, and none of them may mint itself a reviewer.
Writers take an exclusive lock and replace the file atomically, so two `tokens create` at once
both land and a reader never sees half a file.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path

from processors.config import Settings

PREFIX = "lbx"
# scrypt at n=2**14, r=8: about 16 MiB and tens of milliseconds per check. The secret has 256 bits
# of entropy, so the hash guards a leaked file, not a guessable password; the gateway checks a
# token once and remembers the answer (gateway/web/auth.py).
SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_LEN = 2**14, 8, 1, 32
_TOKEN = re.compile(rf"^{PREFIX}_([0-9a-f]{{16}})_([A-Za-z0-9_-]{{43}})$")
# A name is what a decision records as its reviewer: the same bound as a typed reviewer.
MAX_NAME_CHARS = 200
_NAME = re.compile(r"^[\w.@+-][\w .@+-]*$")


class Role(StrEnum):
    """What a token may do. admin may do everything; the others one job each."""

    SUBMITTER = "submitter"  # POST requests and events
    REVIEWER = "reviewer"  # approve or reject held assets
    SRE = "sre"  # replay jobs, metrics
    ANALYST = "analyst"  # read jobs, summaries, metrics
    ADMIN = "admin"


class TokenError(ValueError):
    """A token operation that cannot be done (unknown id, bad name); the message says why."""


@dataclass(frozen=True)
class TokenRecord:
    token_id: str
    name: str
    role: Role
    salt: str  # base64
    hash: str  # base64 of scrypt(secret, salt)
    created_at: int  # epoch ms
    revoked_at: int | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def public(self) -> dict[str, object]:
        """What a listing shows: never the hash or the salt."""
        return {
            "token_id": self.token_id,
            "name": self.name,
            "role": str(self.role),
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
        }


def tokens_path(settings: Settings) -> Path:
    configured = settings.gateway.tokens_file
    return Path(configured).expanduser() if configured else settings.home / "gateway" / "tokens.json"


def _hash(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(
        secret.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=SCRYPT_LEN, maxmem=64 * 2**20
    )


def split_token(token: str) -> tuple[str, str] | None:
    """(token id, secret) of a well-formed token; None for anything else."""
    match = _TOKEN.match(token)
    return (match.group(1), match.group(2)) if match else None


def check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME_CHARS or not _NAME.match(name):
        raise TokenError(
            f"a token name is 1-{MAX_NAME_CHARS} letters, digits, spaces and . _ @ + - "
            f"(it is recorded as the reviewer of a decision), not {name[:40]!r}"
        )
    return name


class TokenStore:
    """The token file. Blocking calls (file I/O, scrypt): the gateway runs them in a thread."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def of(cls, settings: Settings) -> TokenStore:
        return cls(tokens_path(settings))

    def stamp(self) -> tuple[int, int, int] | None:
        """Changes whenever the file is replaced: (inode, size, mtime_ns); None while it is absent."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def load(self) -> list[TokenRecord]:
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        document = json.loads(raw)
        return [TokenRecord(**{**entry, "role": Role(entry["role"])}) for entry in document.get("tokens", [])]

    def create(self, name: str, role: Role | str) -> tuple[TokenRecord, str]:
        """A new token: its record and the token itself, which is not kept anywhere."""
        name, role = check_name(name), Role(role)
        token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        record = TokenRecord(
            token_id=token_id,
            name=name,
            role=role,
            salt=base64.b64encode(salt).decode(),
            hash=base64.b64encode(_hash(secret, salt)).decode(),
            created_at=int(time.time() * 1000),
        )
        with self._locked() as records:
            records.append(record)
        return record, f"{PREFIX}_{token_id}_{secret}"

    def revoke(self, which: str) -> list[TokenRecord]:
        """Revoke the token with this id, or every active token with this name. Raises TokenError
        when nothing matches."""
        now = int(time.time() * 1000)
        revoked = []
        with self._locked() as records:
            for index, record in enumerate(records):
                if record.active and which in (record.token_id, record.name):
                    records[index] = TokenRecord(**{**asdict(record), "revoked_at": now})
                    revoked.append(records[index])
        if not revoked:
            raise TokenError(f"no active token has the id or name {which!r} (see `lightbox tokens list`)")
        return revoked

    def verify(self, token: str, records: list[TokenRecord] | None = None) -> TokenRecord | None:
        """The active record this token belongs to, or None. A token that is malformed or names no
        active record costs no hash."""
        parts = split_token(token)
        if parts is None:
            return None
        token_id, secret = parts
        for record in self.load() if records is None else records:
            if record.token_id == token_id and record.active:
                expected = base64.b64decode(record.hash)
                actual = _hash(secret, base64.b64decode(record.salt))
                return record if hmac.compare_digest(expected, actual) else None
        return None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[list[TokenRecord]]:
        """The records under an exclusive lock; written back (atomically, 0600) on exit."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600), "r+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            records = self.load()
            yield records
            document = {"tokens": [{**asdict(r), "role": str(r.role)} for r in records]}
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(document, fh, indent=2)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
