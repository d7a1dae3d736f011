"""A fault for the share-group test, loaded into the generate workers alone (their PYTHONPATH).

The first worker to reach the acknowledgement of a batch whose outputs it has delivered SIGKILLs
itself there: the records' outputs are on the topic, their acknowledgement never reaches the
broker, so the group hands them to another worker, which produces them again. Which worker is
the first is decided by an exclusive create of LIGHTBOX_TEST_DIE_BEFORE_ACK (it writes its pid
and the records' offsets there). Kept out of the product's code: no switch in production
settings can make a worker die.
"""

from __future__ import annotations

import os
import signal

_MARKER = os.environ.get("LIGHTBOX_TEST_DIE_BEFORE_ACK")

if _MARKER:
    from processors.runtime import share_feed

    _accept = share_feed.ShareFeed._accept

    def _die_before_the_first_ack(self, messages):  # type: ignore[no-untyped-def]
        records = [m for m in messages if m.error() is None]
        if records:
            try:
                fd = os.open(_MARKER, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            except FileExistsError:
                pass
            else:
                offsets = " ".join(f"{m.topic()}/{m.partition()}@{m.offset()}" for m in records)
                os.write(fd, f"{os.getpid()} {offsets}\n".encode())
                os.close(fd)
                os.kill(os.getpid(), signal.SIGKILL)
        return _accept(self, messages)

    share_feed.ShareFeed._accept = _die_before_the_first_ack
