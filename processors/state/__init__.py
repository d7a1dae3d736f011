"""Stage state that survives restarts and rebalances, kept in compacted Kafka topics."""
