"""API tokens: made once and shown once, stored hashed (never the secret) in a 0600 file, listed
without their hashes, revoked by id or name; verification refuses anything but an active token."""

from __future__ import annotations

import json
import stat
import threading
from pathlib import Path

import pytest

from gateway.ops.tokens import Role, TokenError, TokenStore, split_token


@pytest.fixture
def store(tmp_path: Path) -> TokenStore:
    return TokenStore(tmp_path / "gateway" / "tokens.json")


def test_a_token_is_stored_hashed_in_a_private_file(store: TokenStore) -> None:
    record, token = store.create("ana", "reviewer")
    parts = split_token(token)
    assert parts is not None and parts[0] == record.token_id
    raw = store.path.read_text()
    assert parts[1] not in raw and token not in raw, "the secret is never written"
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    (stored,) = json.loads(raw)["tokens"]
    assert {stored["name"], stored["role"]} == {"ana", "reviewer"}
    assert "hash" in stored and "salt" in stored
    assert "hash" not in record.public() and "salt" not in record.public()


def test_verify_accepts_only_the_active_token(store: TokenStore) -> None:
    ana, ana_token = store.create("ana", Role.REVIEWER)
    _, bo_token = store.create("bo", Role.SUBMITTER)
    assert store.verify(ana_token) == ana
    token_id, secret = split_token(ana_token) or ("", "")
    wrong_secret = f"lbx_{token_id}_{secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}"
    # bo's secret under ana's id: the id finds the record, the hash refuses the secret.
    swapped = f"lbx_{token_id}_{split_token(bo_token)[1]}"  # type: ignore[index]
    for bad in (wrong_secret, swapped, "", "lbx_", ana_token + "x", "Bearer " + ana_token):
        assert store.verify(bad) is None, bad
    store.revoke(ana.token_id)
    assert store.verify(ana_token) is None
    assert store.verify(bo_token) is not None


def test_salts_differ_so_equal_hashes_never_show_equal_tokens(store: TokenStore) -> None:
    first, _ = store.create("ana", "reviewer")
    second, _ = store.create("ana", "reviewer")
    assert first.salt != second.salt and first.hash != second.hash


def test_revoke_by_name_revokes_every_active_token_of_that_name(store: TokenStore) -> None:
    store.create("ana", "reviewer")
    store.create("ana", "admin")
    _, bo = store.create("bo", "analyst")
    revoked = store.revoke("ana")
    assert len(revoked) == 2 and all(r.revoked_at for r in revoked)
    assert [r.name for r in store.load() if r.active] == ["bo"]
    with pytest.raises(TokenError):
        store.revoke("ana")  # nothing active left under that name
    with pytest.raises(TokenError):
        store.revoke("nobody")
    assert store.verify(bo) is not None


def test_names_and_roles_are_checked(store: TokenStore) -> None:
    for name in ("", "   ", "x" * 201, "ana\nbo", "<script>"):
        with pytest.raises(TokenError):
            store.create(name, "reviewer")
    with pytest.raises(ValueError):
        store.create("ana", "superuser")
    assert not store.path.exists(), "a refused create writes nothing"


def test_concurrent_creates_all_land(store: TokenStore) -> None:
    """Two `tokens create` at once: the lock keeps either from overwriting the other's record."""
    errors: list[BaseException] = []

    def make(i: int) -> None:
        try:
            store.create(f"user{i}", "analyst")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=make, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(r.name for r in store.load()) == [f"user{i}" for i in range(6)]
