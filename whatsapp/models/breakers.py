"""The circuit breakers' admin page: a model with no table (the state lives in Redis)."""

from __future__ import annotations

from django.db import models


class CircuitBreaker(models.Model):
    """A circuit breaker as the admin shows it. There is no table: the state lives
    in Redis (core.breakers). The model exists so the admin has a page for
    breakers, permissions (view, change = force open / close / reset) guard it,
    and each forced change is a LogEntry naming the breaker."""

    name = models.CharField(max_length=200, primary_key=True)

    class Meta:
        managed = False
        default_permissions = ("view", "change")
        verbose_name = "circuit breaker"

    def __str__(self) -> str:
        return self.name
