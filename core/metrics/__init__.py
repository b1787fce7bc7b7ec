"""Prometheus metrics: what they are (counters), where they are counted, and how they are served
(serving); what is read at scrape time comes from the apps (settings.METRICS_COLLECTORS).

Two kinds:

- **Counted where it happens** (counters and histograms), by ingest and the
  Celery workers. A count that mirrors a database change (a new inbox row, a
  dead letter, a saga step that succeeded) is made in `transaction.on_commit`,
  so it happens once per committed change, never per task attempt: a task
  Celery delivers twice, or a transaction rolled back, counts nothing extra,
  and the counters equal the database's counts.
- **Read at scrape time** (gauges) by the web process's `/metrics`: queue
  lengths (Redis LLEN, summed over kombu's priority lists), stuck inbox rows
  and open dead letters (Postgres), breaker states (Redis), consumer lag (the
  group's committed offsets against the high watermarks, from Kafka). Reading
  the truth when scraped is simpler than keeping gauges in step from many
  processes, and it stays right when every worker is down. What was read is
  kept for METRICS_CACHE_SECONDS per process, so scrapes (however many, however
  close together) cost Postgres, Redis and Kafka one read per window.

/metrics is served to a scraper with METRICS_TOKEN or a staff user holding
settings.METRICS_PERMISSION only
(core/metrics/views.py).

Multiprocess mode: with PROMETHEUS_MULTIPROC_DIR set in the environment of
every process before it starts (prometheus_client reads it on import), each
process writes its counts to files there and the web process adds them all up
(MultiProcessCollector); a dead Celery child's counts stay counted. Without it
each process keeps its own registry and `/metrics` shows only the web
process's own counts plus the scrape-time gauges: fine for a look, wrong for
the dashboard. Ingest also serves its own counts on INGEST_METRICS_ADDR:INGEST_METRICS_PORT.

Labels are bounded by the business (business, intent, action, service,
reason, stage, queue, partition), never a lead, message or customer.
"""
