"""What an operator watches: figures read from every stage, never written.

- collectors: the /metrics figures read at scrape time (queue lengths, lag, backlog);
- stats: `manage.py pipeline_stats` and the demo's counts;
- overview/: the admin's live overview page and its JSON endpoint.

May import the models, kafka and the registries; nothing but the entry points imports it.
"""
