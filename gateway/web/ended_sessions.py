"""Sessions logged out before their expiry: refused from then on, by every gateway on this home.

A session cookie is signed, not stored (gateway/web/auth.py), so a copy of it (a shared machine,
a proxy's log, a stolen cookie) would stay good until its expiry however often its owner logged
out. Logging out writes the session id here with the cookie's latest possible expiry; the
gateway refuses an ended id until that time. The file is shared by the gateways of one home and
re-read when it changes (one stat a request, like the token file), so a logout counts at once on
each; lines past their expiry are dropped when the file is next written.

One line per session: "<session id> <expiry, epoch seconds>".
"""

from __future__ import annotations

import os
import time
from pathlib import Path


class EndedSessions:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._ended: dict[str, float] = {}

    def is_ended(self, session_id: str) -> bool:
        return self._current().get(session_id, 0.0) >= time.time()

    def end(self, session_id: str, expires: float) -> None:
        """Refuse `session_id` until `expires`. Written whole and renamed into place: a reader
        never sees half a file, and two gateways writing at once lose at most the other's newest
        line (that cookie is still cleared in its browser)."""
        now = time.time()
        kept = {sid: at for sid, at in self._current().items() if at >= now}
        kept[session_id] = expires
        self.path.parent.mkdir(parents=True, exist_ok=True)
        scratch = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        scratch.write_text("".join(f"{sid} {at:.0f}\n" for sid, at in kept.items()), encoding="utf-8")
        os.chmod(scratch, 0o600)
        scratch.replace(self.path)
        self._ended, self._stamp = kept, None

    def _current(self) -> dict[str, float]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._ended, self._stamp = {}, None
            return self._ended
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp != self._stamp:
            self._ended = _parse(self.path.read_text(encoding="utf-8", errors="replace"))
            self._stamp = stamp
        return self._ended


def _parse(text: str) -> dict[str, float]:
    ended: dict[str, float] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            ended[parts[0]] = float(parts[1])
    return ended
