"""The reference classifier: keyword rules per language, catalog matching and entity
extraction, standing in for the AI service so the loop runs without one."""

from __future__ import annotations

from typing import Any

from classifier.backends.base import Catalog, Classification, Classifier
from classifier.reference import confidence, intents, language, references, severity, times
from classifier.reference.products import ProductIndex, as_entities
from classifier.reference.text import normalize, raw_tokens, tokens
from whatsapp.contracts.request import AIRequestEvent

MODEL_NAME = "reference-classifier/1"
# Below this much evidence for any intent the message is UNKNOWN (a greeting, a thank-you).
MIN_SCORE = 1.0


class ReferenceClassifier(Classifier):
    model_name = MODEL_NAME

    def __init__(self) -> None:
        # One prepared index per catalog: catalogs are immutable values, so equal ones share it.
        self._indexes: dict[Catalog, ProductIndex] = {}

    def classify(self, request: AIRequestEvent, catalog: Catalog) -> Classification:
        text = request.message.text
        if request.message.media is not None and request.message.media.caption and not text:
            text = request.message.media.caption
        return self.classify_text(text, request.message.received_at, catalog)

    def classify_text(self, text: str, received_at: Any, catalog: Catalog) -> Classification:
        normalized = normalize(text)
        toks = tokens(normalized)
        index = self._index(catalog)
        # Product names are no evidence of the customer's language ("pão de queijo" in an English
        # message): the language is read from the other words, then the counts in its words.
        named = {i for m in index.mentions(toks, "") for i in range(m.start, m.end)}
        raw = raw_tokens(text)
        if len(raw) != len(toks):  # normalization split a word differently: keep every word
            named = set()
        kept_raw = [t for i, t in enumerate(raw) if i not in named]
        kept = [t for i, t in enumerate(toks) if i not in named]
        lang = language.detect(" ".join(kept_raw), kept, catalog.default_language)
        mentions = index.mentions(toks, lang)
        found = intents.scores(
            normalized,
            has_products=bool(mentions),
            has_quantities=any(m.quantity is not None for m in mentions),
        )
        ranked = intents.rank(found)
        (best_intent, best), (_, second) = ranked[0], ranked[1]
        intent = best_intent
        if best < MIN_SCORE:
            # No intent has evidence enough: the confidence is that of "nothing was asked".
            intent, best, second = intents.UNKNOWN, 0.0, 0.0
        entities: dict[str, Any] = {}
        if mentions:
            entities["products"] = as_entities(mentions)
        reference = references.order_reference(normalized)
        if reference:
            entities["order_reference"] = reference
        if intent == intents.COMPLAINT:
            entities["severity"] = severity.severity(normalized)
        if intent == intents.SCHEDULE:
            moment = times.preferred_time(normalized, received_at)
            if moment is not None:
                entities["preferred_time"] = moment.isoformat()
        return Classification(
            intent=intent, confidence=confidence.confidence(best, second), language=lang, entities=entities
        )

    def _index(self, catalog: Catalog) -> ProductIndex:
        index = self._indexes.get(catalog)
        if index is None:
            if len(self._indexes) > 1000:
                self._indexes.clear()
            index = self._indexes[catalog] = ProductIndex(catalog)
        return index
