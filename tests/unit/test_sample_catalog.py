from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import fastavro
import numpy as np
import pytest
from PIL import Image

from gateway.harness.sample_catalog import SampleProduct, catalog_events, make_sample_products
from processors.imaging.masks import compute_mask, mask_coverage

SCHEMA = Path(__file__).resolve().parents[2] / "schemas/avro/catalog_event/v2.avsc"


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[SampleProduct]]:
    out_dir = tmp_path_factory.mktemp("catalog")
    return out_dir, make_sample_products(out_dir)


def test_products_are_distinct_files_of_both_kinds(
    catalog: tuple[Path, list[SampleProduct]],
) -> None:
    out_dir, products = catalog
    assert len(products) >= 6
    assert len({p.sku for p in products}) == len(products)
    digests = {hashlib.sha256((out_dir / p.filename).read_bytes()).hexdigest() for p in products}
    assert len(digests) == len(products)
    kinds = {Path(p.filename).suffix for p in products}
    assert kinds == {".png", ".jpg"}
    for product in products:
        assert product.title and product.brand and product.category and product.attributes
        with Image.open(out_dir / product.filename) as image:
            assert image.size == (512, 512)


def test_png_products_are_cutouts_and_jpeg_products_sit_on_white(
    catalog: tuple[Path, list[SampleProduct]],
) -> None:
    out_dir, products = catalog
    for product in products:
        image = Image.open(out_dir / product.filename)
        if product.filename.endswith(".png"):
            assert image.mode == "RGBA"
            alpha = np.asarray(image.getchannel("A"))
            assert alpha[0, 0] == 0 and 0.05 < (alpha > 127).mean() < 0.7
        else:
            assert image.mode == "RGB"
            assert min(image.getpixel((2, 2))) >= 250
            assert 0.05 < mask_coverage(compute_mask(image)) < 0.7


def test_segmenting_a_flattened_cutout_recovers_its_alpha(
    catalog: tuple[Path, list[SampleProduct]],
) -> None:
    out_dir, products = catalog
    for product in products:
        if not product.filename.endswith(".png"):
            continue
        cutout = Image.open(out_dir / product.filename)
        flat = Image.new("RGB", cutout.size, (255, 255, 255))
        flat.paste(cutout, (0, 0), cutout)
        buffer = io.BytesIO()
        flat.save(buffer, "JPEG", quality=90)
        segmented = np.asarray(compute_mask(Image.open(buffer))) >= 128
        truth = np.asarray(cutout.getchannel("A")) >= 128
        assert (segmented & truth).sum() / (segmented | truth).sum() > 0.9, product.filename


def test_drawing_is_deterministic(catalog: tuple[Path, list[SampleProduct]], tmp_path: Path) -> None:
    out_dir, products = catalog
    again = make_sample_products(tmp_path)
    assert again == products
    for product in products[:2]:
        assert (tmp_path / product.filename).read_bytes() == (out_dir / product.filename).read_bytes()


def test_catalog_events_match_the_avro_schema(
    catalog: tuple[Path, list[SampleProduct]],
) -> None:
    _, products = catalog
    schema = fastavro.parse_schema(json.loads(SCHEMA.read_text()))
    events = catalog_events(products, "http://127.0.0.1:8099/samples/", occurred_at_ms=1_700_000_000_000)
    assert len(events) == len(products)
    for event, product in zip(events, products, strict=True):
        assert fastavro.validation.validate(event, schema)
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, schema, event)
        buffer.seek(0)
        decoded = fastavro.schemaless_reader(buffer, schema)
        assert decoded["event_type"] == "ASSET_REQUEST"
        assert decoded["product"]["sku"] == product.sku
        assert event["occurred_at"] == 1_700_000_000_000
        assert event["references"] == [
            {
                "url": f"http://127.0.0.1:8099/samples/{product.filename}",
                "role": "PRODUCT",
                "required": True,
            }
        ]
        request = event["request"]
        assert isinstance(request, dict)
        assert request["asset_types"] == ["hero"] and request["channels"] == ["web"]
        assert request["locales"] == ["en-US"] and request["template_id"] == "studio-hero"
        assert (request["width"], request["height"]) == (512, 512)


def test_event_ids_are_unique_and_deterministic(
    catalog: tuple[Path, list[SampleProduct]],
) -> None:
    _, products = catalog
    first = [e["event_id"] for e in catalog_events(products, "http://h", occurred_at_ms=1)]
    later = [e["event_id"] for e in catalog_events(products, "http://h")]
    salted = [e["event_id"] for e in catalog_events(products, "http://h", salt="run-2")]
    assert len(set(first)) == len(first)
    assert first == later  # the timestamp is not part of the identity
    assert not set(first) & set(salted)
