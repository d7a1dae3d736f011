"""JSON-lines logging; every line carries the stage and, inside a handler, the job id."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

current_job_id: contextvars.ContextVar[str] = contextvars.ContextVar("job_id", default="")
current_stage: contextvars.ContextVar[str] = contextvars.ContextVar("stage", default="")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if stage := current_stage.get():
            line["stage"] = stage
        if job_id := getattr(record, "job_id", "") or current_job_id.get():
            line["job_id"] = job_id
        for key in ("reason", "topic", "partition", "offset", "attempt"):
            if hasattr(record, key):
                line[key] = getattr(record, key)
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # librdkafka and urllib3 chatter is not job-level information.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
