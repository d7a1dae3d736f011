"""Token counting for the text encoder's limit: a fast approximation, or CLIP's own tokenizer."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from functools import lru_cache

# CLIP's text encoder (SD 1.x/2.x, and both SDXL encoders) sees 77 tokens including its start
# and end tokens; anything beyond is silently cut, so a long prompt loses its tail without error.
CLIP_MAX_TOKENS = 77

TokenCounter = Callable[[str], int]

# CLIP's own pre-tokenizer split: contractions, letter runs, single digits, punctuation runs.
_PRETOKEN = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+|_+", re.IGNORECASE)


def approx_token_count(text: str) -> int:
    """Approximate CLIP BPE token count, start and end tokens included.

    Splits like CLIP's pre-tokenizer, then counts one token per ASCII word of up to 5 letters and
    one more per further 4 letters (BPE keeps common words whole but splits rare long ones), the
    UTF-8 byte length of anything non-ASCII (byte-level BPE: CJK text costs 2-3 tokens a
    character), one per digit and one per ASCII punctuation character. Measured against the real
    CLIP tokenizer it counts ~25% more on English prose and under-counts ~2% of 5-30 word
    snippets, so it errs on the side of counting more but is not a strict bound. Pass a real
    tokenizer (``clip_token_counter()``) as ``token_counter`` where exactness matters.
    """
    count = 2
    for piece in _PRETOKEN.findall(text.casefold()):
        if piece.isascii() and piece.isalpha():
            count += 1 + math.ceil(max(0, len(piece) - 5) / 4)
        else:
            # Byte-level BPE: a non-ASCII character costs up to its UTF-8 length in tokens.
            count += len(piece.encode("utf-8", "surrogatepass"))
    return count


@lru_cache(maxsize=1)
def clip_token_counter() -> TokenCounter | None:
    """The exact CLIP tokenizer from open_clip when installed (its vocabulary ships in the
    package: nothing is downloaded), else None."""
    try:
        from open_clip.tokenizer import SimpleTokenizer
    except ImportError:
        return None
    tokenizer = SimpleTokenizer()
    return lambda text: len(tokenizer.encode(text)) + 2
