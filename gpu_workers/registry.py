"""The model registry: which models exist, where their weights live, and how to run them.

Models are named in a YAML file (or a dict) and always load from local paths; nothing is fetched
from a model hub. A model's *version* is a content hash of its weights and configs, so lineage
records which bytes made an image, not just a name that may be re-pointed later.

YAML shape (relative paths resolve against the file's directory; ``~`` and ``$VARS`` expand)::

    models:
      sd15-fast:
        backend: diffusers
        path: models/sd15
        kind: text-to-image
        dtype: bfloat16
        scheduler: euler
        steps: 25
        guidance: 7.0
        width: 512
        height: 512
        pool: gpu
        options: {channels_last: "true", compile: "false"}

``models`` may also be a list of mappings that each carry ``name``.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

BACKENDS = frozenset({"diffusers", "remote", "compositor"})
KINDS = frozenset({"text-to-image", "inpainting", "image-to-image"})
DTYPES = frozenset({"float32", "float16", "bfloat16"})
POOLS = frozenset({"gpu", "cpu", "private", "remote"})
# Files whose bytes define what a pipeline computes; everything else (READMEs, images) is noise.
VERSIONED_SUFFIXES = frozenset({".json", ".safetensors", ".bin", ".txt"})
VERSION_LENGTH = 12
_CHUNK = 1 << 20

_DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "half": "float16"}
# How options (strings) say yes and no: the registry's flags and the backends' options alike.
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"", "0", "false", "no", "off"})


def is_true(value: str) -> bool:
    return value.strip().lower() in TRUE_WORDS


class ModelRegistryError(ValueError):
    """A model definition is unusable (unknown name, bad field, missing path)."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    backend: str
    path: Path | None = None
    kind: str = "text-to-image"
    dtype: str = "bfloat16"
    scheduler: str = "euler"
    steps: int = 25
    guidance: float = 7.0
    width: int = 512
    height: int = 512
    pool: str = "gpu"
    # Excluded from the hash so a spec stays usable as a dict key despite the mutable mapping.
    options: dict[str, str] = field(default_factory=dict, hash=False)

    def option(self, name: str, default: str = "") -> str:
        return self.options.get(name, default)

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.options.get(name)
        return default if value is None else is_true(value)

    @classmethod
    def from_mapping(cls, name: str, raw: Mapping[str, Any], base_dir: Path | None = None) -> ModelSpec:
        known = {f for f in cls.__dataclass_fields__ if f != "name"}
        unknown = set(raw) - known - {"name"}
        if unknown:
            raise ModelRegistryError(f"model {name!r}: unknown field(s) {sorted(unknown)}")
        if "backend" not in raw:
            raise ModelRegistryError(f"model {name!r}: 'backend' is required")
        try:
            dtype = str(raw.get("dtype", "bfloat16")).lower()
            return cls(
                name=name,
                backend=str(raw["backend"]),
                path=_resolve_path(raw.get("path"), base_dir),
                kind=str(raw.get("kind", "text-to-image")),
                dtype=_DTYPE_ALIASES.get(dtype, dtype),
                scheduler=str(raw.get("scheduler", "euler")).lower(),
                steps=int(raw.get("steps", 25)),
                guidance=float(raw.get("guidance", 7.0)),
                width=int(raw.get("width", 512)),
                height=int(raw.get("height", 512)),
                pool=str(raw.get("pool", "gpu")),
                # YAML turns `true` into a bool; options are strings everywhere downstream.
                options={str(k): _option_str(v) for k, v in (raw.get("options") or {}).items()},
            )
        except (TypeError, ValueError) as exc:
            raise ModelRegistryError(f"model {name!r}: {exc}") from exc

    def problems(self) -> list[str]:
        """Everything wrong with this spec, each as a sentence naming the model."""
        out: list[str] = []
        who = f"model {self.name!r}"
        for label, value, allowed in (
            ("backend", self.backend, BACKENDS),
            ("kind", self.kind, KINDS),
            ("dtype", self.dtype, DTYPES),
            ("pool", self.pool, POOLS),
        ):
            if value not in allowed:
                out.append(f"{who}: {label} {value!r} is not one of {sorted(allowed)}")
        if self.steps < 1 or self.width < 8 or self.height < 8:
            out.append(f"{who}: steps, width and height must be positive")
        if self.backend == "diffusers":
            if self.path is None:
                out.append(f"{who}: a diffusers model needs a local 'path'")
            elif not self.path.exists():
                out.append(f"{who}: path {self.path} does not exist")
            elif not (self.path / "model_index.json").is_file():
                out.append(f"{who}: path {self.path} has no model_index.json (not a diffusers pipeline)")
        elif self.path is not None and not self.path.exists():
            out.append(f"{who}: path {self.path} does not exist")
        return out


def _option_str(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _resolve_path(raw: object, base_dir: Path | None) -> Path | None:
    if raw is None or raw == "":
        return None
    path = Path(os.path.expandvars(str(raw))).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return path


def hash_file(path: Path) -> str:
    """sha256 of a file read in chunks, so multi-GB weights never sit in memory."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def content_version(root: Path) -> str:
    """A short hash over (relative path, file hash) of every weight/config file under root."""
    files = (
        [root]
        if root.is_file()
        else sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in VERSIONED_SUFFIXES)
    )
    digest = hashlib.sha256()
    for file in files:
        rel = file.name if file == root else file.relative_to(root).as_posix()
        digest.update(rel.encode())
        digest.update(b"\0")
        digest.update(hash_file(file).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:VERSION_LENGTH]


class ModelRegistry:
    def __init__(self, specs: Mapping[str, ModelSpec] | list[ModelSpec]) -> None:
        items = specs.values() if isinstance(specs, Mapping) else specs
        self._specs: dict[str, ModelSpec] = {}
        for spec in items:
            if spec.name in self._specs:
                raise ModelRegistryError(f"model {spec.name!r} is defined twice")
            self._specs[spec.name] = spec
        self._versions: dict[str, str] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base_dir: Path | None = None) -> ModelRegistry:
        raw_models = data.get("models", data) if isinstance(data, Mapping) else data
        specs: list[ModelSpec] = []
        if isinstance(raw_models, Mapping):
            for name, raw in raw_models.items():
                specs.append(ModelSpec.from_mapping(str(name), raw or {}, base_dir))
        elif isinstance(raw_models, list):
            for raw in raw_models:
                if not isinstance(raw, Mapping) or "name" not in raw:
                    raise ModelRegistryError(f"model entry {raw!r} has no 'name'")
                specs.append(ModelSpec.from_mapping(str(raw["name"]), raw, base_dir))
        else:
            raise ModelRegistryError("'models' must be a mapping or a list")
        return cls(specs)

    @classmethod
    def from_file(cls, path: Path | str) -> ModelRegistry:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError as exc:
            raise ModelRegistryError(f"model registry file {path} does not exist") from exc
        except yaml.YAMLError as exc:
            raise ModelRegistryError(f"model registry file {path} is not valid YAML: {exc}") from exc
        return cls.from_dict(data, base_dir=path.parent.resolve())

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def names(self) -> list[str]:
        return list(self._specs)

    def get(self, name: str) -> ModelSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise ModelRegistryError(f"unknown model {name!r}; known: {sorted(self._specs)}") from None

    def validate(self) -> None:
        """Fail at start-up, naming every broken model, rather than on the first request."""
        problems = [p for spec in self._specs.values() for p in spec.problems()]
        if problems:
            raise ModelRegistryError("; ".join(problems))

    def version(self, name: str) -> str:
        """Content hash of the model's files (cached: hashing GBs of weights takes seconds)."""
        with self._lock:
            cached = self._versions.get(name)
        if cached is not None:
            return cached
        spec = self.get(name)
        if spec.path is not None:
            if not spec.path.exists():
                raise ModelRegistryError(f"model {name!r}: path {spec.path} does not exist")
            version = content_version(spec.path)
        else:
            # No weights (remote, compositor): the definition itself is what can change.
            fields = asdict(spec)
            fields["path"] = None
            blob = json.dumps(fields, sort_keys=True).encode()
            version = hashlib.sha256(blob).hexdigest()[:VERSION_LENGTH]
        with self._lock:
            self._versions[name] = version
        return version
