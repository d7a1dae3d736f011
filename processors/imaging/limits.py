"""The decode limit every reader of untrusted image bytes applies, from the header, before any
pixel is allocated (downloaded references, generated outputs).

Pillow's own guard (Image.MAX_IMAGE_PIXELS) is process-global and only warns below twice its
value, so each caller passes the limit its configuration names and maps the refusal to its own
reason code.
"""

from __future__ import annotations


class DimensionError(ValueError):
    """Header dimensions that must not be decoded; ``oversized`` tells a bomb from a broken header."""

    def __init__(self, message: str, *, oversized: bool) -> None:
        super().__init__(message)
        self.oversized = oversized


def check_dimensions(size: tuple[int, int], max_pixels: int) -> None:
    """Raise DimensionError for an empty frame or one of more than ``max_pixels`` pixels."""
    width, height = size
    if width <= 0 or height <= 0:
        raise DimensionError(f"invalid dimensions {width}x{height}", oversized=False)
    if width * height > max_pixels:
        raise DimensionError(
            f"{width}x{height} = {width * height} pixels exceeds the {max_pixels} pixel limit",
            oversized=True,
        )
