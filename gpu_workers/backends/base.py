"""The one interface every generation backend implements.

A backend turns a list of compatible items into images in one call, so a GPU backend can run them
as one batched forward pass. The worker groups items by ``batch_key`` before calling ``generate``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from PIL import Image

# The scene a request without one gets; every name is one of processors.prompting.scenes.SCENE_NAMES.
DEFAULT_SCENE = "studio"


class BackendUnavailable(RuntimeError):
    """The backend cannot serve now (down, circuit open, model missing): fail over, do not fail the job."""


@dataclass(frozen=True)
class GenerationParams:
    model: str
    width: int
    height: int
    steps: int
    guidance: float
    sampler: str
    seed: int
    prompt: str
    negative_prompt: str = ""
    # Extra backend options from the routing decision (strength, paste_back, ...), as strings.
    options: tuple[tuple[str, str], ...] = ()

    def option(self, name: str, default: str = "") -> str:
        return dict(self.options).get(name, default)


@dataclass
class GenerationItem:
    request_id: str  # job_id#variant: unique within a batch
    params: GenerationParams
    product: Image.Image | None = None  # the stored product reference, decoded (RGB or RGBA)
    mask: Image.Image | None = None  # "L" mode: 255 where the product is
    scene: str = DEFAULT_SCENE  # scene name from the prompt template, for backends without a model


@dataclass
class GeneratedImage:
    request_id: str
    image: Image.Image
    model_version: str
    compute_ms: float
    extra: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    name: str

    def batch_key(self, item: GenerationItem) -> tuple[object, ...]:
        """Items with equal keys may share one generate() call."""
        ...

    async def generate(self, items: list[GenerationItem]) -> list[GeneratedImage]:
        """One image per item, in order. Raise BackendUnavailable when the backend is down."""
        ...

    async def healthy(self) -> bool: ...
