"""The Grafana dashboard (deploy/grafana/lightbox.json) for ClickHouse-server users, made from the
named SQL files (processors/eventlog/sql/) so its panels never drift from what the CLI, the
gateway dashboard and analysts run: `python scripts/grafana_dashboard.py` writes it, `--check`
fails if the committed file is stale (tests/unit/test_metrics_cli.py runs that check).

Each named parameter becomes what the grafana-clickhouse-datasource plugin fills in:
`fromUnixTimestamp64Milli({since_ms:Int64})` the range's start ($__fromTime), `{bucket_s:UInt32}`
the panel's interval ($__interval_s), `{database:Identifier}` and `{by:String}` dashboard
variables; the lifecycle list is bound here, as the loader binds it. A series (`bucket`, epoch
seconds) is wrapped to give Grafana a time column and to stop at the range's end ($__toTime).
"""

from __future__ import annotations

import json
import re
from typing import Any

from processors.eventlog import named

DATASOURCE = {"type": "grafana-clickhouse-datasource", "uid": "${datasource}"}
# The parameters Grafana fills, as the plugin's macros and the dashboard's variables.
MACROS = {
    "fromUnixTimestamp64Milli({since_ms:Int64})": "$__fromTime",
    "{bucket_s:UInt32}": "$__interval_s",
    "{database:Identifier}": "${database}",
    "{by:String}": "'${by}'",  # "all", the variable's first choice, is no grouping
}
# Grafana's time-series format and the table format (sqlds FormatQueryOption).
TIME_SERIES, TABLE = 0, 1
WIDTH = 24


def panel_sql(name: str) -> str:
    """A named query's text with every parameter as Grafana fills it."""
    sql = named.load(name).bind_some()
    for written, macro in MACROS.items():
        sql = sql.replace(written, macro)
    if left := re.findall(r"\{\w+:[^}]+\}", sql):
        raise ValueError(f"{name}.sql: no Grafana form for parameter(s) {', '.join(left)}")
    if "bucket" in named.load(name).params or name.endswith("_over_time"):
        sql = (
            "SELECT toDateTime(bucket) AS time, * EXCEPT (bucket)\nFROM (\n"
            + sql
            + "\n)\nWHERE bucket <= toUnixTimestamp($__toTime)\nORDER BY time"
        )
    return sql


def _panel(index: int, name: str) -> dict[str, Any]:
    query = named.load(name)
    series = name.endswith("_over_time")
    height, half = 8, WIDTH // 2
    return {
        "id": index + 1,
        "type": "timeseries" if series else "table",
        "title": query.title,
        "description": f"{query.description} (processors/eventlog/sql/{name}.sql)",
        "datasource": DATASOURCE,
        "gridPos": {
            "h": height,
            "w": half,
            "x": (index % 2) * half,
            "y": (index // 2) * height,
        },
        "targets": [
            {
                "refId": "A",
                "datasource": DATASOURCE,
                "editorType": "sql",
                "queryType": "timeseries" if series else "table",
                "format": TIME_SERIES if series else TABLE,
                "rawSql": panel_sql(name),
            }
        ],
        "options": {} if series else {"showHeader": True},
    }


def dashboard() -> dict[str, Any]:
    # Series first (what changes), then the tables.
    ordered = sorted(named.names(), key=lambda n: (not n.endswith("_over_time"), n))
    return {
        "uid": "lightbox-event-log",
        "title": "Lightbox event log",
        "description": "Made by scripts/grafana_dashboard.py from processors/eventlog/sql/: do not edit",
        "tags": ["lightbox"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "1m",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "ClickHouse",
                    "type": "datasource",
                    "query": "grafana-clickhouse-datasource",
                },
                {
                    "name": "database",
                    "label": "database",
                    "type": "textbox",
                    "query": "lightbox",
                    "current": {"text": "lightbox", "value": "lightbox"},
                },
                {
                    "name": "by",
                    "label": "job figures by",
                    "type": "custom",
                    "query": "all,model,backend,template,campaign",
                    "current": {"text": "all", "value": "all"},
                },
            ]
        },
        "panels": [_panel(i, name) for i, name in enumerate(ordered)],
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, sort_keys=False) + "\n"
