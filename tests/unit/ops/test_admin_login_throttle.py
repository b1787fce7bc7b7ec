"""The admin login is throttled (django-axes): five wrong passwords for one username from one
address lock that pair out, even with the right password then, while the same username from
another address and other users still log in; the lockout is in the admin, and lifting it
there lets the operator back in."""

from __future__ import annotations

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.models import User
from django.test import Client

pytestmark = pytest.mark.django_db
LOGIN = "/admin/login/?next=/admin/"


def attempt(client: Client, username: str, password: str) -> int:
    return client.post(LOGIN, {"username": username, "password": password}).status_code


def test_five_wrong_passwords_lock_the_username_from_that_address_until_lifted_in_the_admin(settings):
    assert settings.AXES_FAILURE_LIMIT == 5
    User.objects.create_superuser("ops", "ops@example.com", "right-horse-battery")
    User.objects.create_superuser("lead", "lead@example.com", "other-horse-battery")
    guesser = Client(REMOTE_ADDR="203.0.113.9")
    answers = [attempt(guesser, "ops", f"guess-{n}") for n in range(5)]
    assert answers[:4] == [200] * 4, "a wrong password shows the form again"
    assert answers[4] == 429, "the fifth failure locks the pair out"
    assert attempt(guesser, "ops", "right-horse-battery") == 429, "locked out: even the right password"

    assert attempt(Client(REMOTE_ADDR="198.51.100.7"), "ops", "right-horse-battery") == 302, "from elsewhere"
    admin = Client(REMOTE_ADDR="198.51.100.8")
    assert attempt(admin, "lead", "other-horse-battery") == 302
    listing = admin.get("/admin/axes/accessattempt/")
    assert listing.status_code == 200 and "203.0.113.9" in listing.content.decode()

    (lockout,) = AccessAttempt.objects.filter(username="ops")
    assert lockout.failures_since_start == 6, "the five guesses and the refused try after them"
    answer = admin.post(
        "/admin/axes/accessattempt/",
        {"action": "delete_selected", "_selected_action": [lockout.pk], "post": "yes"},
    )
    assert answer.status_code == 302 and not AccessAttempt.objects.exists()
    assert attempt(guesser, "ops", "right-horse-battery") == 302, "lifted: the operator is back in"
