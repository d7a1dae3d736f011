"""Real Kafka and MinIO as local processes on loopback, for machines without Docker."""
