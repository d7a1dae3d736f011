"""Content credentials on the real pipeline: every file the publish stage writes verifies against
the signing chain under the pipeline's home, carries its job's lineage and the IPTC digital source
type (in the manifest and in XMP), and the marketplace main passed its channel's rules."""

from __future__ import annotations

import json
import uuid

import pytest

from deploy.local.session import expected_job_ids
from processors.provenance.source_type import COMPOSITE_SYNTHETIC, uri
from processors.provenance.verify import verify_bytes
from processors.storage import ObjectStore
from tests.support.catalog import events_for

pytestmark = pytest.mark.integration


def test_every_published_file_verifies_with_its_lineage(pipeline, catalog_server) -> None:
    # Its own SKUs: sessions sharing the stack publish the sample SKUs under the same keys.
    events = events_for(
        catalog_server, [2, 3], f"prov{uuid.uuid4().hex[:8]}", channels=("web", "marketplace")
    )
    job_ids = expected_job_ids(events)
    pipeline.submit(events)
    states = pipeline.wait_for(job_ids, timeout_s=180)
    assert {states.get(j) for j in job_ids} == {"published"}, states

    anchors = (pipeline.settings.home / "keys" / "ca.pem").read_text()
    store = ObjectStore(pipeline.settings.storage)
    prefix = pipeline.settings.review.publish_prefix.rstrip("/")
    checked = 0
    for event in events:
        for key in store.list_keys(f"{prefix}/{event['product']['sku']}/"):
            job_id = key.split("/")[-2]
            if key.endswith("lineage.json"):
                continue
            v = verify_bytes(store.get_bytes(key), trust_anchors_pem=anchors)
            assert v.ok, (key, v.state, v.failures)
            assert v.digital_source_type == uri(COMPOSITE_SYNTHETIC) and v.source_types_agree, key
            lineage = v.lineage or {}
            assert lineage["job_id"] == job_id and job_id in job_ids
            assert lineage["review"]["reviewer"] == "policy:auto"
            assert lineage["model"]["version"].startswith("compositor")
            document = json.loads(store.get_bytes(key.rsplit("/", 1)[0] + "/lineage.json"))
            assert [r["sha256"] for r in lineage["references"]] == [
                r["sha256"] for r in document["references"]
            ]
            assert "prompt" not in lineage
            if "marketplace" in key:
                assert lineage["channel_checks"], key
                assert all(c["passed"] for c in lineage["channel_checks"]), lineage["channel_checks"]
            checked += 1
    assert checked == 2 * (2 + 1)  # two products, web (2 files) and marketplace (1 file) each
