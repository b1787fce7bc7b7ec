"""Classifier backends for tests, named by CLASSIFIER_BACKEND in a child process's environment."""

from __future__ import annotations

from classifier.backends.base import Catalog, Classification
from classifier.reference import ReferenceClassifier
from whatsapp.contracts.request import AIRequestEvent


class ExplodingClassifier(ReferenceClassifier):
    """The reference rules, except that a message containing "boom" makes it raise (a backend bug)."""

    model_name = "exploding/1"

    def classify(self, request: AIRequestEvent, catalog: Catalog) -> Classification:
        if "boom" in request.message.text:
            raise RuntimeError("the model crashed")
        return super().classify(request, catalog)
