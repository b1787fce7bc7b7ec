"""The pipeline's plumbing in Celery: how a message's tasks are built and sent.

- hand_off: ingest's rows to Celery, a batch in one Redis round trip;
- chains: which tasks follow which, their deterministic ids, queues and priorities (by task name);
- lanes: per-business fairness (a token bucket in Redis picks each message's lane);
- signals: what runs around every task (log context, Sentry tags, stage timing);
- turns: one customer's messages one at a time, in the order sent (the others wait as rows).

May import: actions (their queues), models, and the layers below the app. Never ingest, edge,
saga or send: the chains name the tasks, they never import their bodies.
"""
