"""OCR check for jobs that carry text (a text overlay): did the expected text come out legibly?

Generators often garble typography (missing or doubled letters, invented words), so the check is
fuzzy: both texts are normalised (case, punctuation, whitespace, Unicode forms) and the expected
text is compared with the best-matching window of the OCR output, since the image may show other
text too (packaging, a logo) that must not dilute the score.

pytesseract drives the ``tesseract`` binary (apt: tesseract-ocr). pytesseract is imported lazily
and a missing binary raises ``OcrUnavailable``, so the quality stage can tell "cannot check" from
"text is wrong".
"""

from __future__ import annotations

import re
import shutil
import unicodedata
from dataclasses import dataclass
from difflib import SequenceMatcher

from PIL import Image

# Tesseract reads best with text at least ~20-30 px tall; small renders are upscaled first.
_MIN_OCR_SHORT_SIDE = 300
_MAX_UPSCALE = 4
_NON_WORD = re.compile(r"[^\w]+|_")


class OcrError(Exception):
    """OCR ran but failed (timeout, tesseract error)."""


class OcrUnavailable(OcrError):
    """OCR cannot run here: the tesseract binary, its language data or pytesseract is missing."""


@dataclass(frozen=True)
class OcrConfig:
    lang: str = "eng"
    # Page segmentation mode; None lets tesseract lay out the page itself (3: fully automatic),
    # which copes with overlays placed anywhere on a scene.
    psm: int | None = None
    timeout_s: float = 30.0


DEFAULT_OCR = OcrConfig()


def tesseract_available() -> bool:
    """Whether the tesseract binary pytesseract would call is on this machine."""
    try:
        import pytesseract
    except ImportError:
        return False
    return shutil.which(pytesseract.pytesseract.tesseract_cmd) is not None


def ocr_text(image: Image.Image, config: OcrConfig = DEFAULT_OCR) -> str:
    """The text tesseract reads in ``image`` (raw, not normalised)."""
    try:
        import pytesseract
    except ImportError as exc:
        raise OcrUnavailable("pytesseract is not installed (install the 'ml' extra)") from exc
    options = f"--psm {config.psm}" if config.psm is not None else ""
    try:
        return str(
            pytesseract.image_to_string(
                _prepare(image), lang=config.lang, config=options, timeout=config.timeout_s
            )
        )
    except pytesseract.TesseractNotFoundError as exc:
        raise OcrUnavailable(
            f"tesseract binary not found ({pytesseract.pytesseract.tesseract_cmd!r}); "
            "install tesseract-ocr or set pytesseract.pytesseract.tesseract_cmd"
        ) from exc
    except pytesseract.TesseractError as exc:
        if "Failed loading language" in str(exc) or "Error opening data file" in str(exc):
            raise OcrUnavailable(f"tesseract language data {config.lang!r} not installed: {exc}") from exc
        raise OcrError(f"tesseract failed: {exc}") from exc
    except RuntimeError as exc:  # pytesseract's timeout
        raise OcrError(f"tesseract: {exc}") from exc


def text_match_score(expected: str, image: Image.Image, config: OcrConfig = DEFAULT_OCR) -> float:
    """How well ``expected`` appears in ``image``, in [0, 1] (1 = read exactly)."""
    if not normalise_text(expected):
        # Nothing to look for is nothing missing; whether a job must carry text is intake's call.
        return 1.0
    return text_similarity(expected, ocr_text(image, config))


def normalise_text(text: str) -> str:
    """Casefolded words separated by single spaces; punctuation and Unicode variants dropped."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_NON_WORD.sub(" ", folded).split())


def text_similarity(expected: str, observed: str) -> float:
    """SequenceMatcher ratio of ``expected`` against the best window of ``observed`` words.

    Windows are runs of one fewer to one more words than expected, so a dropped or split word
    (common in OCR of generated type) still lines up.
    """
    target = normalise_text(expected)
    words = normalise_text(observed).split()
    if not target:
        return 1.0
    if not words:
        return 0.0
    n = len(target.split())
    best = 0.0
    for size in range(max(1, n - 1), n + 2):
        for start in range(max(1, len(words) - size + 1)):
            window = " ".join(words[start : start + size])
            matcher = SequenceMatcher(None, target, window, autojunk=False)
            # quick_ratio is an upper bound of ratio: skip the exact computation when it cannot win.
            if matcher.quick_ratio() <= best:
                continue
            best = max(best, matcher.ratio())
            if best == 1.0:
                return best
    return best


def _prepare(image: Image.Image) -> Image.Image:
    """Greyscale on white, upscaled when small: what tesseract's binariser handles best."""
    if image.mode in ("RGBA", "LA", "PA", "P") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(canvas, rgba)
    grey = image.convert("L")
    short = min(grey.size)
    if 0 < short < _MIN_OCR_SHORT_SIDE:
        factor = min(_MAX_UPSCALE, -(-_MIN_OCR_SHORT_SIDE // short))
        grey = grey.resize((grey.width * factor, grey.height * factor), Image.Resampling.LANCZOS)
    return grey
