"""The event log: pipeline.events in ClickHouse, and the queries analysts and SREs run on it.

sink.py (the `eventlog` stage) writes through engine.py, which also serves server.py (the query
endpoint the sink runs with the embedded engine); reader.py is how every other process asks;
queries.py holds the questions, analyst.py what an analyst's SQL may be, clickhouse.py the table.
"""
