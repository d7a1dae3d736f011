"""Loads every version of every schema under schemas/avro/<name>/v<N>.avsc.

Writers always use a schema's latest version. Readers resolve a message's writer schema from its
fingerprint, so data written by any shipped version stays readable (Avro schema resolution).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

AVRO_DIR = Path(__file__).parent / "avro"


@dataclass(frozen=True)
class SchemaVersion:
    name: str
    version: int
    parsed: Any
    fingerprint: bytes  # 8 bytes, little-endian CRC-64-AVRO, as single-object encoding frames it

    @property
    def label(self) -> str:
        return f"{self.name}.v{self.version}"


def crc64_fingerprint(parsed_schema: Any) -> bytes:
    canonical = to_parsing_canonical_form(parsed_schema)
    return int(fingerprint(canonical, "CRC-64-AVRO"), 16).to_bytes(8, "little")


class SchemaRegistry:
    def __init__(self, root: Path = AVRO_DIR) -> None:
        self._versions: dict[str, list[SchemaVersion]] = {}
        self._by_fingerprint: dict[bytes, SchemaVersion] = {}
        for schema_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            files = sorted(schema_dir.glob("v*.avsc"), key=lambda p: int(p.stem[1:]))
            versions = []
            for file in files:
                parsed = fastavro.parse_schema(json.loads(file.read_text()), _write_hint=False)
                sv = SchemaVersion(schema_dir.name, int(file.stem[1:]), parsed, crc64_fingerprint(parsed))
                if sv.fingerprint in self._by_fingerprint:
                    other = self._by_fingerprint[sv.fingerprint].label
                    raise ValueError(f"{sv.label} has the same canonical form as {other}")
                self._by_fingerprint[sv.fingerprint] = sv
                versions.append(sv)
            if versions:
                self._versions[schema_dir.name] = versions

    @property
    def names(self) -> list[str]:
        return sorted(self._versions)

    def versions(self, name: str) -> list[SchemaVersion]:
        try:
            return self._versions[name]
        except KeyError:
            raise KeyError(f"no schema named {name!r}; known: {', '.join(self.names)}") from None

    def latest(self, name: str) -> SchemaVersion:
        return self.versions(name)[-1]

    def by_fingerprint(self, fp: bytes) -> SchemaVersion | None:
        return self._by_fingerprint.get(fp)


@cache
def default_registry() -> SchemaRegistry:
    return SchemaRegistry()
