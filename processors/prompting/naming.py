"""What a template id and a template version look like, and how versions order.

A template lives at ``<root>/<id>/<version>.j2``, so the id names a directory and the version a
file; the parser refuses front matter that breaks these, so every template the catalogue holds
obeys them and nothing else needs to re-check them.
"""

from __future__ import annotations

import re

TEMPLATE_ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")
TEMPLATE_VERSION = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+$")


def version_key(version: str) -> tuple[int, ...]:
    """Semantic order: 1.10.0 after 1.9.0."""
    return tuple(int(p) for p in version.split("."))
