"""Celery's settings: the CELERY_* names of Django's settings, copied once into a dict.

Celery looks its settings up on every task it sends and runs. Read through Django's lazy
settings object, each lookup (and each miss, as an exception) cost a measurable share of
a worker's time; a plain dict costs a dict lookup. Imported lazily, on Celery's first look
at its configuration, so Django's settings are loaded by then as before.
"""

from django.conf import settings

SETTINGS = {name: getattr(settings, name) for name in dir(settings) if name.startswith("CELERY_")}
