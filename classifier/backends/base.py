"""What a classifier backend is: one call from a request event and a catalog to a classification.

The `classify` process does the Kafka side (consume, produce, commit); a backend only decides.
So a real model replaces the reference rules by naming its class in `CLASSIFIER_BACKEND`, and the
real AI service replaces the whole process by publishing on the result topic itself.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string

from whatsapp.contracts.request import AIRequestEvent

DEFAULT_BACKEND = "classifier.reference.ReferenceClassifier"


@dataclass(frozen=True)
class CatalogProduct:
    sku: str
    name: str


@dataclass(frozen=True)
class Catalog:
    """A business's products as a backend sees them; empty for a business nobody knows here."""

    business_id: str
    products: tuple[CatalogProduct, ...] = ()
    # The language to assume when a message gives no evidence of its own ("ok", an emoji).
    default_language: str = "en"


@dataclass(frozen=True)
class Classification:
    """A backend's answer, in the result contract's terms (intent names, entity shapes)."""

    intent: str
    confidence: float
    language: str
    entities: dict[str, Any] = field(default_factory=dict)

    def contract_entities(self) -> dict[str, Any]:
        """The entities object of the result event: the backend's entities plus the language."""
        return {**self.entities, "language": self.language}


class Classifier(abc.ABC):
    """A classifier backend. Instances are made once per process and must be reusable."""

    # Written to the result's ai.model, e.g. "reference-classifier/1".
    model_name: str = "classifier"

    @abc.abstractmethod
    def classify(self, request: AIRequestEvent, catalog: Catalog) -> Classification:
        """Classify one customer message; must not raise for any text a customer can send."""


def backend_class(path: str | None = None) -> type[Classifier]:
    """The class `CLASSIFIER_BACKEND` names. Raises ImportError or TypeError when it names none."""
    cls = import_string(path or configured_path())
    if not (isinstance(cls, type) and issubclass(cls, Classifier)):
        raise TypeError(f"{path or configured_path()} is not a subclass of classifier.backends.base.Classifier")
    return cls


def load_backend(path: str | None = None) -> Classifier:
    return backend_class(path)()


def configured_path() -> str:
    return str(getattr(settings, "CLASSIFIER_BACKEND", DEFAULT_BACKEND))
