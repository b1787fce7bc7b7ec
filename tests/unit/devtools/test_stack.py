"""`make up`'s admin user is made once. (The stack itself:
tests/integration/test_stack.py.)"""

from __future__ import annotations

import pytest


@pytest.mark.django_db
def test_the_admin_password_is_made_once():
    from devtools.stack import ensure_admin

    password = ensure_admin()
    assert password and len(password) >= 12
    assert ensure_admin() is None  # the user exists: nothing new to print
