"""Content credentials end to end, through the functions the postprocess and publish stages call:
a compositor job's chosen image -> its channel's derivatives (framed, checked, XMP) -> signed with
the job's lineage -> verified. Every file verifies; one changed byte anywhere fails; exiftool, an
independent reader, sees the IPTC digital source type in the signed files."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageChops, ImageDraw

from gpu_workers.backends.compositor.paste import composite_with_placement
from processors.channels.presets import load_presets
from processors.channels.product_mask import job_product_mask
from processors.channels.render import render_channel
from processors.config import Settings
from processors.imaging.derivatives import Metadata
from processors.imaging.framing import cutout, framed, mask_box
from processors.imaging.masks import compute_mask
from processors.provenance.keys import init_test_chain, load_material
from processors.provenance.signing import ContentSigner, SigningError
from processors.provenance.source_type import COMPOSITE_SYNTHETIC, job_source_type, uri
from processors.provenance.verify import verify_bytes
from processors.stages.postprocess import lineage_of

CHANNELS = ("web", "social", "story", "email", "marketplace", "shopping", "default")


def _product() -> Image.Image:
    """A packshot: a two-tone mug on a white studio backdrop."""
    image = Image.new("RGB", (600, 600), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.rectangle((170, 150, 400, 480), fill=(30, 90, 170))
    draw.rectangle((200, 180, 370, 250), fill=(240, 200, 40))
    draw.ellipse((390, 230, 480, 380), outline=(30, 90, 170), width=22)
    return image


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_test_chain(tmp_path_factory.mktemp("keys")).directory


@pytest.fixture(scope="module")
def signer(chain: Path) -> ContentSigner:
    return ContentSigner(load_material("", "", "ES256", chain))


@pytest.fixture(scope="module")
def anchors(chain: Path) -> str:
    return (chain / "ca.pem").read_text()


@pytest.fixture(scope="module")
def made() -> dict[str, Any]:
    """A compositor job as postprocess receives it, its chosen image, and what it loads."""
    product = _product()
    mask = compute_mask(product)
    product_png = io.BytesIO()
    product.save(product_png, "PNG")
    digest = hashlib.sha256(product_png.getvalue()).hexdigest()
    image, placement = composite_with_placement(product, mask, 1024, 1024, "kitchen", 1234)
    job: dict[str, Any] = {
        "job_id": "job-prov-1",
        "event_id": "evt-1",
        "idempotency_key": "SKU-MUG|hero|1024x1024|marketplace|en-US|studio-hero|3",
        "submitted_at": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        "product": {
            "sku": "SKU-MUG",
            "title": "Mug",
            "brand": "Acme",
            "category": "kitchen",
            "attributes": {},
        },
        "spec": {
            "asset_type": "hero",
            "channel": "marketplace",
            "locale": "en-US",
            "template_id": "studio-hero",
            "template_version": "3",
            "width": 1024,
            "height": 1024,
            "text_overlay": None,
        },
        "references": [
            {
                "role": "PRODUCT",
                "key": f"refs/sha256/{digest[:2]}/{digest}.png",
                "sha256": digest,
                "content_type": "image/png",
                "width": 600,
                "height": 600,
                "size_bytes": 1,
                "mask_key": None,
            },
        ],
        "dropped_references": [
            {"role": "MOOD", "required": False, "url_sha256": "f" * 64, "reason": "too_large", "detail": ""}
        ],
        "prompt": {
            "template_id": "studio-hero",
            "template_version": "3",
            "positive": "SECRET-BRIEF a blue mug on a kitchen counter",
            "negative": "blurry",
            "variables": {"mood": "warm"},
        },
        "route": {
            "rule_id": "default",
            "rules_version": "7",
            "backend": "compositor",
            "model": "compositor",
            "pool": "cpu",
            "fallbacks": [],
            "params": {"scene": "kitchen"},
            "canary": False,
        },
        "generation": {
            "backend": "compositor",
            "model": "compositor",
            "model_version": "compositor-1.0.0",
            "seed": 1234,
            "sampler": "none",
            "steps": 0,
            "guidance": 0.0,
            "width": 1024,
            "height": 1024,
            "output_keys": [],
            "batch_size": 1,
            "queue_wait_ms": 0.0,
            "compute_ms": 1.0,
            "fell_back_from": None,
        },
        "quality": {
            "passed": True,
            "scores": {"preservation": 0.981, "blank": 0.12},
            "reasons": [],
            "chosen_index": 0,
        },
        "review": {
            "decision": "APPROVE",
            "reviewer": "ana@example.com",
            "reason": "looks right",
            "decided_at": dt.datetime(2026, 1, 3, 9, 0, tzinfo=dt.UTC),
        },
        "attempt": 0,
    }
    return {"job": job, "image": image, "placement": placement, "product": product, "mask": mask}


def _load(made: dict[str, Any]):  # type: ignore[no-untyped-def]
    return lambda reference: (made["product"], made["mask"])


def _published(made: dict[str, Any], signer: ContentSigner, channel: str) -> list[tuple[Any, bytes]]:
    """What publish writes for ``channel``: postprocess's render path, then the signature."""
    job = {**made["job"], "spec": {**made["job"]["spec"], "channel": channel}}
    mask = job_product_mask(job, made["image"].size, _load(made))
    metadata = Metadata(lineage_of(job), uri(job_source_type(job, {})))
    files = []
    for out in render_channel(made["image"], load_presets().for_channel(channel), metadata, mask):
        record = {
            "name": out.spec.name,
            "format": out.spec.format,
            "width": out.spec.width,
            "height": out.spec.height,
            "sha256": hashlib.sha256(out.data).hexdigest(),
        }
        files.append((out, signer.sign_derivative(out.data, job, record)))
    return files


def test_the_compositors_product_mask_is_known_without_searching(made: dict[str, Any]) -> None:
    mask = job_product_mask(made["job"], made["image"].size, _load(made))
    assert mask is not None
    p = made["placement"]
    box = mask_box(mask)
    assert box is not None
    placed = (p.x, p.y, p.x + p.width, p.y + p.height)
    assert all(abs(a - b) <= 1 for a, b in zip(box, placed, strict=True)), (box, placed)
    # Where the mask is solid, the composite shows the product's own pixels, not the scene.
    solid = np.asarray(mask) == 255
    colours = np.asarray(made["image"])[solid].astype(int)
    # The mug's blue, its label's yellow, and the studio white inside its handle (a filled hole).
    palette = np.array([[30, 90, 170], [240, 200, 40], [255, 255, 255]])
    distance = np.abs(colours[:, None, :] - palette[None, :, :]).sum(axis=2).min(axis=1)
    assert (distance < 30).mean() > 0.97  # the rest: resampled edges between the mug's colours


def test_the_placed_mask_is_exactly_the_alpha_the_compositor_pasted(made: dict[str, Any]) -> None:
    cut = cutout(made["product"], made["mask"])
    assert cut is not None
    resized, placement = framed(cut, 1024, 1024)
    pasted = Image.new("L", (1024, 1024), 0)
    pasted.paste(resized.getchannel("A"), (placement.x, placement.y))
    mask = job_product_mask(made["job"], (1024, 1024), _load(made))
    assert mask is not None and ImageChops.difference(mask, pasted).getbbox() is None


@pytest.mark.parametrize("channel", CHANNELS)
def test_every_published_file_verifies_and_carries_the_lineage(
    made: dict[str, Any], signer: ContentSigner, anchors: str, channel: str
) -> None:
    job = made["job"]
    for out, signed in _published(made, signer, channel):
        v = verify_bytes(signed, trust_anchors_pem=anchors)
        assert v.ok, (out.spec.name, v.state, v.failures)
        assert v.digital_source_type == uri(COMPOSITE_SYNTHETIC) and v.source_types_agree
        lineage = v.lineage
        assert lineage is not None
        assert lineage["job_id"] == job["job_id"]
        assert lineage["request"]["event_id"] == "evt-1" and lineage["request"]["channel"] == channel
        assert lineage["template"] == {"id": "studio-hero", "version": "3"}
        assert lineage["model"]["name"] == "compositor" and lineage["model"]["version"] == "compositor-1.0.0"
        assert lineage["seed"] == 1234 and lineage["parameters"]["scene"] == "kitchen"
        assert [r["sha256"] for r in lineage["references"]] == [job["references"][0]["sha256"]]
        assert lineage["dropped_references"][0]["reason"] == "too_large"
        assert lineage["quality"]["scores"] == {"blank": 0.12, "preservation": 0.981}
        assert lineage["review"] == {
            "decision": "APPROVE",
            "reviewer": "ana@example.com",
            "decided_at": "2026-01-03T09:00:00.000Z",
        }
        assert lineage["derivative"]["name"] == out.spec.name
        assert [c["rule"] for c in lineage["channel_checks"]] == [v.name for v in out.verdicts]
        published = [a for a in v.actions if a["action"] == "c2pa.published"]
        assert published and "ana@example.com" in json.dumps(published)
        with Image.open(io.BytesIO(signed)) as decoded:
            decoded.load()  # still an ordinary image file
            assert decoded.size == (out.spec.width, out.spec.height)


def test_marketplace_main_from_the_compositor_passes_its_rules(
    made: dict[str, Any], signer: ContentSigner
) -> None:
    ((out, _),) = _published(made, signer, "marketplace")
    assert out.verdicts and not out.broken, [v.describe() for v in out.verdicts]


def test_no_prompt_text_unless_configured(made: dict[str, Any], signer: ContentSigner, chain: Path) -> None:
    ((_, signed),) = _published(made, signer, "default")
    assert b"SECRET-BRIEF" not in signed
    assert "prompt" not in (verify_bytes(signed).lineage or {})
    telling = ContentSigner(load_material("", "", "ES256", chain), include_prompt=True)
    ((_, signed),) = _published(made, telling, "default")
    assert (verify_bytes(signed).lineage or {})["prompt"]["positive"].startswith("SECRET-BRIEF")


def _offsets(signed: bytes) -> dict[str, int]:
    """Where to change one byte: in the XMP, in the manifest store, in the image data, at the end."""
    xmp = signed.index(b"lightbox:lineage")
    manifest = signed.index(b"c2pa.signature")
    image_data = (max(xmp, manifest) + len(signed)) // 2
    return {
        "xmp": xmp + 20,
        "manifest": manifest - 40,
        "image data": image_data,
        "last byte": len(signed) - 1,
    }


@pytest.mark.parametrize("channel", ["web", "default"])  # JPEG + WebP, and PNG
def test_a_file_changed_by_one_byte_fails_verification(
    made: dict[str, Any], signer: ContentSigner, anchors: str, channel: str
) -> None:
    for out, signed in _published(made, signer, channel):
        assert verify_bytes(signed, trust_anchors_pem=anchors).ok
        for where, offset in _offsets(signed).items():
            changed = bytearray(signed)
            changed[offset] ^= 0x01
            v = verify_bytes(bytes(changed), trust_anchors_pem=anchors)
            assert not v.intact and not v.ok, f"{out.spec.name}: a byte changed in the {where} still verifies"


def test_trust_is_separate_from_integrity(
    made: dict[str, Any], signer: ContentSigner, tmp_path: Path
) -> None:
    ((_, signed),) = _published(made, signer, "default")
    stranger = init_test_chain(tmp_path / "other")
    for anchors in (None, stranger.ca.read_text()):
        v = verify_bytes(signed, trust_anchors_pem=anchors)
        assert v.intact and not v.trusted and not v.ok
        shown = v.summary()  # what a job page shows per file
        # Checked against a CA that did not issue it, the signer is named untrusted; with none, trust is
        # simply not asserted.
        assert (
            shown["failures"] == (["signingCredential.untrusted"] if anchors else [])
            and shown["state"] == "Valid"
        )
        assert (
            shown["digital_source_type"] == COMPOSITE_SYNTHETIC and shown["signer"] == "Lightbox TEST signer"
        )


def test_an_unsigned_file_has_no_credentials(made: dict[str, Any]) -> None:
    metadata = Metadata(lineage_of(made["job"]), uri(COMPOSITE_SYNTHETIC))
    (out,) = render_channel(made["image"], load_presets().for_channel("default"), metadata)
    v = verify_bytes(out.data)
    assert not v.present and v.state == "absent" and not v.ok
    assert v.xmp_digital_source_type == uri(COMPOSITE_SYNTHETIC)  # the XMP marking is there regardless


def test_exiftool_reads_the_digital_source_type_of_every_format(
    made: dict[str, Any], signer: ContentSigner, tmp_path: Path
) -> None:
    exiftool = shutil.which("exiftool")
    assert exiftool, "exiftool is missing: scripts/bootstrap.sh installs Debian's libimage-exiftool-perl"
    paths = []
    for channel in ("web", "default"):  # JPEG, WebP, PNG
        for out, signed in _published(made, signer, channel):
            path = tmp_path / f"{out.spec.name}.{out.spec.format.lower()}"
            path.write_bytes(signed)
            paths.append(path)
    result = subprocess.run(
        [exiftool, "-json", "-G1", "-XMP-iptcExt:DigitalSourceType", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    read = {Path(entry["SourceFile"]).suffix: entry for entry in json.loads(result.stdout)}
    assert set(read) == {".jpeg", ".png", ".webp"}
    for entry in read.values():
        assert entry["XMP-iptcExt:DigitalSourceType"] == uri(COMPOSITE_SYNTHETIC), entry


def test_only_the_derivative_formats_are_signed(signer: ContentSigner) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "GIF")
    with pytest.raises(SigningError, match="cannot sign image/gif"):
        signer.sign(buffer.getvalue(), "image/gif", {"title": "x"})


def test_the_signer_follows_the_settings(tmp_path: Path) -> None:
    off = Settings(home=tmp_path, provenance={"sign": False})
    assert ContentSigner.from_settings(off) is None
    # Nothing configured: the local test chain, made on first use under <home>/keys.
    signer = ContentSigner.from_settings(Settings(home=tmp_path))
    assert signer is not None and signer.material.is_test
    assert (tmp_path / "keys" / "ca.pem").is_file()
    half = Settings(home=tmp_path, provenance={"cert_path": str(tmp_path / "keys" / "signer.pem")})
    with pytest.raises(ValueError, match="set together"):
        ContentSigner.from_settings(half)
