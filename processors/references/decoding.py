"""Proof by decoding, in two steps so memory can be budgeted between them.

``probe_image`` reads only what the header says (type by sniffing, size, mode) and refuses what
must never be decoded; ``prove_image`` then decodes every pixel. A caller that decodes many
references at once holds ``DecodeBudget`` for the probe's ``decoded_bytes`` around the second
step, so concurrent decodes of camera-sized images cannot add up past a fixed number of bytes.
Both steps are CPU-bound: run them off the event loop (the references stage runs them through
its own ``run_blocking``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass

from PIL import Image, ImageFile

from processors.imaging.formats import BY_MIME
from processors.imaging.limits import DimensionError, check_dimensions
from processors.references import sniff as sniffing
from processors.references.url_policy import FetchPolicy, Reason, ReferenceFetchError

# Pillow keeps these modes at one byte per pixel; every other mode (RGB included) at four.
_ONE_BYTE_MODES = frozenset({"1", "L", "P"})
# glibc's mallopt parameter number, and the size from which allocations get their own mapping.
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ImageInfo:
    content_type: str
    format: str
    width: int
    height: int
    mode: str = "RGB"

    @property
    def decoded_bytes(self) -> int:
        """What the decoded pixels occupy in Pillow's memory."""
        return decoded_bytes((self.width, self.height), self.mode)


def decoded_bytes(size: tuple[int, int], mode: str) -> int:
    per_pixel = 1 if mode in _ONE_BYTE_MODES else 4
    return size[0] * size[1] * per_pixel


def require_strict_truncation() -> None:
    # Pillow's switch is process-global and cannot be overridden per call; if anything in the
    # process turned it on, truncated downloads would decode "successfully". Fail loudly.
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True; reference validation requires False")


def refuse_non_raster(data: bytes) -> str:
    """The sniffed raster MIME type of ``data`` (its first bytes suffice), or a refusal."""
    if not data:
        raise ReferenceFetchError(Reason.EMPTY_BODY, "zero bytes")
    mime = sniffing.sniff(data)
    if mime == sniffing.SVG:
        raise ReferenceFetchError(Reason.SVG_NOT_ALLOWED, "SVG is refused, not rasterised")
    if mime is None or not sniffing.is_raster(mime):
        raise ReferenceFetchError(
            Reason.NOT_AN_IMAGE, f"content sniffed as {mime or 'unknown'}; starts {data[:8]!r}"
        )
    return mime


def probe_image(data: bytes, policy: FetchPolicy) -> ImageInfo:
    """Type, size and mode from the header; refuses non-images and oversized frames."""
    mime = refuse_non_raster(data)
    # Only the sniffed type's decoder ever sees downloaded bytes: Pillow would otherwise try
    # every plugin it has (EPS hands data to Ghostscript, for one), whatever the bytes are.
    decoder = BY_MIME[mime].pillow
    if decoder is None:
        raise ReferenceFetchError(Reason.UNSUPPORTED_FORMAT, f"{mime} cannot be decoded here")
    require_strict_truncation()
    with _decode_errors(mime), Image.open(io.BytesIO(data), formats=[decoder]) as image:
        try:
            check_dimensions(image.size, policy.max_pixels)
        except DimensionError as exc:
            reason = Reason.DECOMPRESSION_BOMB if exc.oversized else Reason.CORRUPT_IMAGE
            raise ReferenceFetchError(reason, str(exc)) from exc
        return ImageInfo(mime, image.format or decoder, image.width, image.height, image.mode)


def prove_image(data: bytes, info: ImageInfo) -> None:
    """Decode every pixel: a truncated or corrupt file raises corrupt_image."""
    decoder = BY_MIME[info.content_type].pillow
    assert decoder is not None  # probe_image refused the rest
    require_strict_truncation()
    with _decode_errors(info.content_type), Image.open(io.BytesIO(data), formats=[decoder]) as image:
        image.load()


def inspect_image(data: bytes, policy: FetchPolicy) -> ImageInfo:
    """Probe and prove in one call, for callers that decode one image at a time."""
    info = probe_image(data, policy)
    prove_image(data, info)
    return info


@contextlib.contextmanager
def _decode_errors(mime: str):  # type: ignore[no-untyped-def]
    try:
        yield
    except ReferenceFetchError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ReferenceFetchError(Reason.DECOMPRESSION_BOMB, str(exc)) from exc
    except Exception as exc:
        # Decoders fed hostile bytes raise all sorts (OSError, SyntaxError, struct.error,
        # IndexError...): whatever it is, the file did not decode.
        raise ReferenceFetchError(
            Reason.CORRUPT_IMAGE, f"{mime} failed to decode: {type(exc).__name__}: {exc}"
        ) from exc


class DecodeBudget:
    """Bytes of decoded pixels allowed in memory at once, shared by everything one process
    decodes. A request larger than the whole budget waits until it can run alone, so one huge
    (but admitted) image still decodes."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._used = 0
        self._peak = 0
        self._changed = asyncio.Condition()

    @property
    def in_use(self) -> int:
        return self._used

    @property
    def peak(self) -> int:
        """The most ever held at once (for tests and benchmarks)."""
        return self._peak

    @contextlib.asynccontextmanager
    async def hold(self, nbytes: int) -> AsyncIterator[None]:
        want = min(max(0, nbytes), self.capacity)
        async with self._changed:
            await self._changed.wait_for(lambda: self._used + want <= self.capacity)
            self._used += want
            self._peak = max(self._peak, self._used)
        try:
            yield
        finally:
            async with self._changed:
                self._used -= want
                self._changed.notify_all()


def return_freed_pixels_to_the_os() -> bool:
    """Make allocations of 1 MiB and more (decoded pixels: Pillow allocates them in blocks of up
    to 16 MiB) mappings of their own, which free() hands straight back to the OS.

    Without it glibc raises its mmap threshold to the largest block freed so far (up to 32 MiB),
    so after the first decode every block comes from a thread's heap and stays resident after it
    is freed: a process that decodes camera-sized images on several threads keeps several times
    its decode budget resident (measured: 1015 MiB peak against 545 MiB with the threshold fixed,
    tests/bench/bench_reference_memory.py). Process-wide, glibc only; False where it cannot be set.
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES))
