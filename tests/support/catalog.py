"""Catalog events for integration tests. Each test gets its own SKUs: job ids derive from the SKU
and slot, and intake rightly de-duplicates a job another test already made."""

from __future__ import annotations

from typing import Any

from gateway.harness.sample_catalog import catalog_events


def events_for(server: Any, indices: list[int], tag: str, **kwargs: Any) -> list[dict[str, Any]]:
    events = catalog_events([server.products[i] for i in indices], server.url, salt=tag, **kwargs)
    for event in events:
        event["product"]["sku"] = f"{event['product']['sku']}-{tag}"
    return events
