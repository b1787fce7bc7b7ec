"""The agent inbox: people in the loop of the pipeline (issue 22).

Staff see a customer's conversation as one thread, take it over from the bot, answer by hand
and hand it back. The app sits above whatsapp in the layers (pyproject.toml's contracts):
it reads every app below it and nothing below imports it. The state the pipeline must read
(who holds a conversation, until when) lives on leads.Lead (take_over, hand_back), so the
reply path (whatsapp.send.reply) skips an automatic reply as SKIPPED_AGENT without knowing
this app exists; an agent's reply goes through the bot's own sender (whatsapp.send.agent).

Modules: models (the Conversation proxy and its permission), conversations (the list, the
thread and their JSON, the queries), agents (take over, hand back, reply: what a view may
do), views/urls/templates (the pages), tasks (the agent reply's Celery task), admin.
"""
