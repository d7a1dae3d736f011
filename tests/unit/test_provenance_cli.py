"""`lightbox keys init|show` and `lightbox verify FILE`, as a user runs them."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from gateway.cli import keys
from processors.imaging.derivatives import DerivativeSpec, Metadata, render
from processors.provenance.keys import init_test_chain, load_material
from processors.provenance.signing import ContentSigner
from processors.provenance.source_type import TRAINED_ALGORITHMIC_MEDIA, uri

JOB = {
    "job_id": "job-cli",
    "event_id": "evt-cli",
    "product": {"sku": "SKU-CLI"},
    "spec": {"channel": "web", "template_id": "studio-hero", "template_version": "2"},
    "generation": {"backend": "diffusers", "model": "sd15", "model_version": "abc123", "seed": 9},
    "references": [{"role": "PRODUCT", "sha256": "0" * 64}],
    "quality": {"passed": True, "scores": {"clip": 0.31}},
    "review": {"decision": "APPROVE", "reviewer": "policy:auto", "decided_at": 1767225600000},
}


def _run(home: Path, *argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="lightbox")
    parser.add_argument("--config")
    keys.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = args.func(args)
    return code, out.getvalue()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LIGHTBOX_HOME", str(tmp_path))
    monkeypatch.delenv("LIGHTBOX_CONFIG", raising=False)
    return tmp_path


def _signed_file(home: Path, directory: Path | None = None) -> Path:
    chain = directory or home / "keys"
    signer = ContentSigner(load_material("", "", "ES256", chain))
    spec = DerivativeSpec("web-800", 64, 64, "contain", "JPEG")
    data = render(
        Image.new("RGB", (80, 60), (10, 120, 200)), spec, Metadata({}, uri(TRAINED_ALGORITHMIC_MEDIA))
    ).data
    record = {"name": spec.name, "format": spec.format, "width": 64, "height": 64, "sha256": "x"}
    path = home / "web-800.jpg"
    path.write_bytes(signer.sign_derivative(data, JOB, record))
    return path


def test_keys_init_makes_the_chain_once(home: Path) -> None:
    code, out = _run(home, "keys", "init")
    assert code == 0 and "TEST" in out and (home / "keys" / "signer.key").is_file()
    assert _run(home, "keys", "init")[0] == 2  # never overwritten by accident
    assert _run(home, "keys", "init", "--force")[0] == 0
    code, out = _run(home, "keys", "show", "--json")
    shown = json.loads(out)
    assert code == 0 and shown["test_chain"] and len(shown["certificates"]) == 2


def test_verify_prints_the_lineage_and_exits_zero_for_a_trusted_file(home: Path) -> None:
    _run(home, "keys", "init")
    path = _signed_file(home)
    code, out = _run(home, "verify", str(path))
    assert code == 0, out
    assert "OK (Trusted)" in out
    for expected in (
        "job-cli",
        "studio-hero@2",
        "sd15@abc123",
        "seed        9",
        "trainedAlgorithmicMedia",
        "approve by policy:auto at 2026-01-01T00:00:00.000Z",
        "clip=0.310",
    ):
        assert expected in out, expected
    code, out = _run(home, "verify", "--json", str(path))
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["lineage"]["model"]["version"] == "abc123"
    assert report["digital_source_type"] == uri(TRAINED_ALGORITHMIC_MEDIA) and report["source_types_agree"]


def test_verify_fails_a_changed_file_and_an_untrusted_signer(
    home: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    _run(home, "keys", "init")
    path = _signed_file(home)
    changed = bytearray(path.read_bytes())
    changed[len(changed) // 2] ^= 0xFF
    tampered = home / "tampered.jpg"
    tampered.write_bytes(bytes(changed))
    code, out = _run(home, "verify", str(tampered))
    assert code == 1 and "NOT INTACT" in out

    elsewhere = init_test_chain(tmp_path_factory.mktemp("elsewhere"))
    foreign = _signed_file(home, elsewhere.directory)
    code, out = _run(home, "verify", str(foreign))
    assert code == 1 and "SIGNER NOT TRUSTED" in out
    # ...and trusted once its CA is given.
    assert _run(home, "verify", "--trust", str(elsewhere.ca), str(foreign))[0] == 0


def test_verify_says_when_a_file_has_no_credentials(home: Path) -> None:
    plain = home / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    code, out = _run(home, "verify", str(plain))
    assert code == 1 and "no content credentials" in out
