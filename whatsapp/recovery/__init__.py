"""Driving messages through again: what the operator and the sweeper use when something stopped.

- sweeper: re-drives inbox rows stuck in RECEIVED or PROCESSING, and statuses never applied;
- requeue: the DLQ's requeue handler (DLQ_REQUEUE_HANDLER): a dead letter back into its stage;
- replay: records read again from Kafka offsets or a time range (`manage.py replay`).

May import every stage below it (ingest, edge, saga, pipeline) and the models; nothing but
the entry points (tasks, management commands) imports it.
"""
