"""Field checks on a plain dict: presence, type, size and text hygiene, one rejection per bad field.

Events arrive Avro-decoded from catalog.events, or as JSON from the gateway and the CLI, so nothing
here trusts the schema to have checked types. Each getter returns the field's value only when it
is valid (else None, with the rejection recorded), so later checks build on good values only.
Oversized collections are rejected from their length alone and never scanned further, so a
hostile event (an attributes map of 100k entries) costs no more than a well-formed one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from processors.intake.policy import IntakePolicy
from processors.intake.rejection import Rejection

MISSING = object()

# C0 controls other than \t and \n, DEL, C1 controls, and UTF-16 surrogates. A str holding a
# surrogate came from JSON ("\ud800") or a lenient decoder and cannot be encoded as UTF-8, so it
# would fail later, at Avro encoding or in a file name, far from the cause.
_BAD_TEXT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


class FieldChecker:
    """Accumulates rejections; each getter returns the field's value only when it is valid."""

    def __init__(self, policy: IntakePolicy) -> None:
        self.policy = policy
        self.out: list[Rejection] = []

    def reject(self, reason: str, path: str, detail: str) -> None:
        self.out.append(Rejection(reason, path, detail))

    def section(self, obj: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any] | None:
        value = obj.get(key, MISSING)
        if value is MISSING or value is None:
            self.reject("missing_field", path, "required")
            return None
        if not isinstance(value, Mapping):
            self.reject("invalid_type", path, f"expected a record, got {type_name(value)}")
            return None
        return value

    def text(
        self,
        obj: Mapping[str, Any],
        key: str,
        path: str,
        max_chars: int,
        *,
        required: bool = True,
        allow_empty: bool = False,
    ) -> str | None:
        value = obj.get(key, MISSING)
        if value is MISSING or value is None:
            if required:
                self.reject("missing_field", path, "required")
            return None
        return self.check_text(value, path, max_chars, allow_empty=allow_empty)

    def check_text(
        self, value: object, path: str, max_chars: int, *, allow_empty: bool = False
    ) -> str | None:
        if isinstance(value, bytes | bytearray):
            try:
                bytes(value).decode("utf-8")
            except UnicodeDecodeError as exc:
                self.reject("invalid_text", path, f"not valid UTF-8 ({exc.reason} at byte {exc.start})")
                return None
            self.reject("invalid_type", path, "expected a string, got bytes")
            return None
        if not isinstance(value, str):
            self.reject("invalid_type", path, f"expected a string, got {type_name(value)}")
            return None
        if len(value) > max_chars:
            self.reject("too_long", path, f"{len(value)} characters, at most {max_chars}")
            return None
        bad = _BAD_TEXT.search(value)
        if bad:
            char = ord(bad.group(0))
            what = (
                "an unpaired surrogate (not valid UTF-8)"
                if 0xD800 <= char <= 0xDFFF
                else "a control character"
            )
            self.reject("invalid_text", path, f"contains {what} U+{char:04X} at index {bad.start()}")
            return None
        if not allow_empty and not value.strip():
            self.reject("missing_field", path, "must not be empty")
            return None
        return value

    def integer(self, obj: Mapping[str, Any], key: str, path: str, default: int | None = None) -> int | None:
        value = obj.get(key, MISSING)
        if value is MISSING or value is None:
            if default is None:
                self.reject("missing_field", path, "required")
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.reject("invalid_type", path, f"expected an integer, got {type_name(value)}")
            return None
        return value

    def in_range(
        self, obj: Mapping[str, Any], key: str, path: str, default: int, low: int, high: int
    ) -> int | None:
        value = self.integer(obj, key, path, default)
        if value is not None and not low <= value <= high:
            self.reject("invalid_value", path, f"{value} is not within {low}..{high}")
            return None
        return value

    def boolean(self, obj: Mapping[str, Any], key: str, path: str, default: bool) -> bool | None:
        value = obj.get(key, MISSING)
        if value is MISSING or value is None:
            return default
        if not isinstance(value, bool):
            self.reject("invalid_type", path, f"expected a boolean, got {type_name(value)}")
            return None
        return value

    def enum(
        self,
        obj: Mapping[str, Any],
        key: str,
        path: str,
        symbols: tuple[str, ...],
        default: str | None = None,
    ) -> str | None:
        value = obj.get(key, MISSING)
        if value is MISSING or value is None:
            if default is None:
                self.reject("missing_field", path, "required")
            return default
        if not isinstance(value, str):
            self.reject("invalid_type", path, f"expected a string, got {type_name(value)}")
            return None
        if value not in symbols:
            self.reject("invalid_enum", path, f"{short(value)} is not one of {list(symbols)}")
            return None
        return value

    def string_list(self, obj: Mapping[str, Any], key: str, path: str) -> list[str] | None:
        value = obj.get(key, MISSING)
        if value is MISSING or value is None:
            self.reject("missing_field", path, "required")
            return None
        if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
            self.reject("invalid_type", path, f"expected a list, got {type_name(value)}")
            return None
        if not value:
            self.reject("missing_field", path, "at least one value is required")
            return None
        # A list longer than the job cap cannot be accepted whatever it holds: do not scan it.
        if len(value) > self.policy.max_jobs_per_event:
            self.reject(
                "too_many_jobs",
                path,
                f"{len(value)} values; the event may fan out to "
                f"at most {self.policy.max_jobs_per_event} jobs",
            )
            return None
        good: list[str] = []
        for i, item in enumerate(value):
            text = self.check_text(item, f"{path}[{i}]", self.policy.max_text_chars)
            if text is not None:
                good.append(text)
        return good if len(good) == len(value) else None


def attribute_path(key: object) -> str:
    """The path rejections name an attribute by; its key cut short, as it may be hostile."""
    return f"product.attributes[{short(key, 40)}]"


def type_name(value: object) -> str:
    return type(value).__name__


def short(value: object, limit: int = 60) -> str:
    """repr(value), cut to limit characters: hostile values must not flood a rejection."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
