"""Businesses by business_id, kept per process.

Every pipeline task needs its message's business, and a business changes rarely (an
edit in the admin). So each process keeps the rows it has read, and trusts one only
while its `updated_at` equals the version the task read along with the inbox row, in
the same statement (whatsapp.models.InboxQuerySet.row): an edit is
seen by the next task in every process, and an unchanged business costs no query.
The catalog is not kept here: stock changes with every order, and the handlers that
need the catalog read it when they first look (whatsapp.handlers.base.Catalog).
"""

from __future__ import annotations

import threading
from datetime import datetime

from leads.models import Business

_lock = threading.Lock()
_businesses: dict[str, Business] = {}


def business(business_id: str, version: datetime | None) -> Business:
    """The business, from this process's copy when `version` says it is current.
    Raises Business.DoesNotExist."""
    cached = _businesses.get(business_id)
    if cached is not None and version is not None and cached.updated_at == version:
        return cached
    fresh = Business.objects.get(business_id=business_id)
    with _lock:
        _businesses[business_id] = fresh
    return fresh


def forget() -> None:
    """Drop every copy (tests, and a process that wants a clean start)."""
    with _lock:
        _businesses.clear()
