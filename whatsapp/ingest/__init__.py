"""Ingest: AI results from Kafka into the inbox, then handed to the pipeline.

- loop: the `ingest_kafka` consumer (poll, take in, hand off, commit only what was handed off);
- validate: each record against the result contract and the known businesses;
- intake: one batch into Postgres in one transaction (new rows, duplicates, dead letters);
- isolate: a batch that fails for a reason other than an outage, split down to the record at fault.

May import: models, contracts, kafka, pipeline (the hand-off), and the layers below the app
(core, leads, dlq). Never edge or saga: Kafka and Celery task names are the only seams.
"""
