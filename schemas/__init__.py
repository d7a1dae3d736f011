"""Avro contracts: one versioned schema per topic value, and the one serde that reads and writes them."""

from schemas.registry import SchemaRegistry, default_registry
from schemas.serde import AvroSerde, SerdeError
from schemas.topics import Topic, TopicNames

__all__ = ["AvroSerde", "SchemaRegistry", "SerdeError", "Topic", "TopicNames", "default_registry"]
