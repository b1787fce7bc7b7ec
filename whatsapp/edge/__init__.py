"""The edge: what Meta's WhatsApp Cloud API sends us, kept durably before anything else.

- webhook/: the signed webhook (views, signature, payload, store): every delivery stored, answered 200;
- outbox: the relay that publishes the stored messages on `ai.process.request`;
- statuses: Meta's delivery statuses stored by the webhook (a task applies them: whatsapp.saga.statuses).

May import: models, contracts, kafka, and the layers below the app. Never ingest or saga: the
relay's Kafka topic and the status task's name are the only seams.
"""
