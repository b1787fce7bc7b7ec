"""Sending to the customer through the WhatsApp Cloud API: each call at most once.

- reply: the reply's outbound row and its PENDING -> SENDING -> SENT / FAILED / UNKNOWN send;
- read_receipts: marking the customer's message read, best effort, first thing in the run's tail task.

May import: pipeline (lanes), actions (the errors they raise), models, and core's Cloud API
client. Never a stage (edge, ingest, saga): the saga calls in here.
"""
