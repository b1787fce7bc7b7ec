import importlib

import pytest
from django.apps import apps


@pytest.fixture
def groups(transactional_db):
    """The groups inbox/migrations/0002_groups makes: a transactional test's flush empties the
    tables the migrations filled, so its function runs again here, as it runs on a new database."""
    importlib.import_module("inbox.migrations.0002_groups").make_groups(apps, None)
