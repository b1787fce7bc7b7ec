"""Kafka helpers shared by ingest, replay, the relay and the classifier (classifier/ imports them).

- config: the confluent-kafka settings of every client;
- records: one consumed record, detached from librdkafka and safe to store;
- group_member: the lifecycle of a consumer-group process (ingest and classify).

This is a helper layer, like healthchecks' hc/lib: it imports confluent-kafka and Django's
settings, never a stage of this app, nor leads, dlq or core (an import-linter contract).
"""

from whatsapp.kafka.config import client_config, consumer_config, producer_config
from whatsapp.kafka.records import Record, datetime_from_millis, headers_from_json

__all__ = ["Record", "client_config", "consumer_config", "datetime_from_millis", "headers_from_json", "producer_config"]
