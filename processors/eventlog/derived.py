"""A table the events feed through a materialized view, rebuilt when its layout changes.

The per-job facts and the generations table are both kept this way: the table carries a layout
mark as its comment; a connection that finds none, or another, drops the table and its view and
makes them again, filling the table from the events already stored. The view is made before the
backfill, so an event inserted in between is folded in twice, never missed; both tables are
built so that a second copy of an event changes nothing.
"""

from __future__ import annotations

from clickhouse_connect.driver.client import Client


def ensure_fed_table(
    client: Client,
    database: str,
    *,
    table: str,
    view: str,
    mark: str,
    create_table: str,
    select: str,
    columns: str = "",
) -> bool:
    """Make `table` (by `create_table`, whose COMMENT is `mark`) and the view that inserts
    `select` over each block of events into it. `columns`: the table's columns the select fills,
    when it does not fill them all. True if the table was (re)built."""
    comment = client.command(
        "SELECT comment FROM system.tables WHERE database = {db:String} AND name = {t:String}",
        parameters={"db": database, "t": table},
    )
    rebuilt = comment != mark
    if rebuilt:
        client.command(f"DROP VIEW IF EXISTS {database}.{view}")
        client.command(f"DROP TABLE IF EXISTS {database}.{table}")
        client.command(create_table)
    client.command(
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.{view} TO {database}.{table} AS {select}"
    )
    if rebuilt:
        target = f"{database}.{table}" + (f" ({columns})" if columns else "")
        client.command(f"INSERT INTO {target} {select}")
    return rebuilt
