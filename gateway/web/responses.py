"""The gateway's JSON and error responses."""

from __future__ import annotations

import functools
import json
from typing import Any

from aiohttp import web


def json_response(data: Any, status: int = 200) -> web.Response:
    # Timelines carry timestamps and ClickHouse values that json.dumps does not know.
    return web.json_response(data, status=status, dumps=functools.partial(json.dumps, default=str))


def error(status: int, message: str, as_json: bool = True) -> web.Response:
    if as_json:
        return json_response({"error": message}, status)
    return web.Response(status=status, text=message)
