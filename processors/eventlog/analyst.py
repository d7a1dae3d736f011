"""What an analyst's SQL may be: one read-only statement, never writing a file.

Applied wherever analyst SQL runs: the sink's query endpoint (server.py) and the reader when it
talks to a ClickHouse server directly (reader.py).
"""

from __future__ import annotations

import re

READ_ONLY = re.compile(r"^\s*(SELECT|WITH|SHOW|DESCRIBE|EXPLAIN)\b", re.IGNORECASE)
# readonly=1 refuses writes and table functions such as file() and url(), but INTO OUTFILE still
# writes a file on the engine's host. Matching "INTO <space> OUTFILE" is beaten by a comment
# between the words (INTO/**/OUTFILE, INTO--\nOUTFILE), so the word is refused wherever it
# appears, in comments and string literals too: analysts never need it.
READONLY_SETTINGS = {"readonly": 1}


def analyst_query_problem(sql: str) -> str | None:
    """Why this SQL may not run for an analyst, or None if it may."""
    if not READ_ONLY.match(sql) or ";" in sql.strip().rstrip(";"):
        return "only one read-only statement (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN)"
    if "OUTFILE" in sql.upper():
        return "OUTFILE may not appear anywhere in the query: results come back in the response"
    return None
