"""Content digests of a catalog event: what intake compares to tell an update from a duplicate.

- :func:`product_digest`: the product as received (title, brand, category, attributes, and the
  reference URLs with their role and required flag, in the order given: the first product
  reference is the one generation works from, so reordering is a change). Two events whose slots
  match and whose product digests match ask for the same asset: the second is a duplicate. A
  differing digest makes a new version of the asset.
- :func:`event_digest`: the whole event as received, schema defaults filled in, so a JSON event
  and its Avro form agree. A reused event id whose digest differs is a conflicting duplicate.

Both are sha256 over canonical JSON (sorted keys, no whitespace, UTF-8, timestamps as epoch
milliseconds). The bytes behind a URL are not here: intake never downloads; see docs/intake.md.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from processors.intake.event_schema import with_defaults
from processors.state.entry import epoch_ms


def occurred_ms(event: Mapping[str, Any]) -> int:
    """The event's occurred_at in epoch milliseconds (Avro decodes it to a datetime). Validation
    requires it; a record built without one (a test's) counts as 0, older than any real event."""
    return epoch_ms(event.get("occurred_at"), 0)


def product_content(event: Mapping[str, Any]) -> dict[str, Any]:
    ev = with_defaults(event)
    product = ev["product"]
    return {
        "title": product["title"],
        "brand": product["brand"],
        "category": product["category"],
        "attributes": dict(product["attributes"]),
        "references": [
            {"url": r["url"], "role": str(r["role"]), "required": bool(r["required"])}
            for r in ev["references"]
        ],
    }


def product_digest(event: Mapping[str, Any]) -> str:
    return _sha256(product_content(event))


def event_digest(event: Mapping[str, Any]) -> str:
    ev = with_defaults(event)
    ev["occurred_at"] = occurred_ms(event)
    return _sha256(ev)


def _sha256(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_plain)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _plain(value: Any) -> Any:
    # Enum symbols and timestamps as Avro decoding may hand them over.
    if isinstance(value, dt.datetime):
        return epoch_ms(value)
    return str(value)
