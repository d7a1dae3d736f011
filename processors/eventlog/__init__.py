"""The event log: pipeline.events in ClickHouse, and the queries analysts and SREs run on it."""
