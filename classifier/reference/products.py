"""Which catalog products a message names, by SKU or by (typo-tolerant) name, with the count
asked for each.

A product is named by its SKU ("SD-01", "sd01", "sd 01") or by a word of its name that no other
product of the catalog has and that is long enough to be told apart from ordinary words
("sourdough", "queijo", "cinnamon"; not "loaf" or "roll"). Words are compared with rapidfuzz
after a plural strip, so "croisant", "alfajores" and "brigaderos" match while "pan" does not.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from rapidfuzz import fuzz, process

from classifier.backends.base import Catalog, CatalogProduct
from classifier.reference.quantities import quantity_after, quantity_before
from classifier.reference.text import normalize, singular, tokens

# Shorter name words are too close to everyday words ("roll", "loaf", "pan") to match fuzzily.
MIN_WORD_CHARS = 6
# rapidfuzz's ratio (0-100) a message word needs against a catalog word: one typo in a word of
# six to ten letters stays above it, two different words of that length stay below.
MIN_SCORE = 84
_SKU_TOKEN = re.compile(r"^([a-z]{1,4})-?(\d{1,4})$")
MAX_QUANTITY = 10_000


@dataclass(frozen=True)
class Mention:
    product: CatalogProduct
    start: int
    end: int
    quantity: int | None


class ProductIndex:
    """A catalog prepared for matching: built once per catalog version and reused."""

    def __init__(self, catalog: Catalog) -> None:
        self.by_sku = {_sku_key(p.sku): p for p in catalog.products}
        words: dict[str, list[CatalogProduct]] = {}
        for product in catalog.products:
            for word in {singular(w) for w in _name_words(product.name)}:
                words.setdefault(word, []).append(product)
        counts = Counter({word: len(owners) for word, owners in words.items()})
        # Only words that single out one product and are long enough to be told apart.
        self.words = {
            word: owners[0] for word, owners in words.items() if counts[word] == 1 and len(word) >= MIN_WORD_CHARS
        }
        self.choices = list(self.words)
        # Every word of each name, to widen a mention over the rest of its name ("pao de queijo").
        self.name_words = {p.sku: {singular(w) for w in _name_words(p.name)} for p in catalog.products}

    def mentions(self, toks: list[str], language: str) -> list[Mention]:
        found: dict[str, Mention] = {}
        index = 0
        while index < len(toks):
            product, end = self._product_at(toks, index)
            if product is None:
                index += 1
                continue
            previous = found.get(product.sku)
            words = self.name_words.get(product.sku, set())
            while index > 0 and singular(toks[index - 1]) in words:
                index -= 1
            while end < len(toks) and singular(toks[end]) in words:
                end += 1
            quantity = quantity_before(toks, index, language) or quantity_after(toks, end)
            if quantity is not None and not 1 <= quantity <= MAX_QUANTITY:
                quantity = None
            # "muffins de blueberry": the second word of the same product is the same mention.
            if previous is None or (previous.quantity is None and quantity is not None):
                start = previous.start if previous else index
                found[product.sku] = Mention(product, start, end, quantity)
            index = end
        return sorted(found.values(), key=lambda m: m.start)

    def _product_at(self, toks: list[str], index: int) -> tuple[CatalogProduct | None, int]:
        token = toks[index]
        sku = self._sku(toks, index)
        if sku is not None:
            return sku
        word = singular(token)
        if len(word) < MIN_WORD_CHARS - 1 or not self.choices:
            return None, index + 1
        best = process.extractOne(word, self.choices, scorer=fuzz.ratio, score_cutoff=MIN_SCORE)
        if best is None:
            return None, index + 1
        return self.words[best[0]], index + 1

    def _sku(self, toks: list[str], index: int) -> tuple[CatalogProduct, int] | None:
        token = toks[index]
        if _SKU_TOKEN.match(token):
            product = self.by_sku.get(_sku_key(token))
            if product is not None:
                return product, index + 1
        # "sd 01": a SKU typed with a space.
        if index + 1 < len(toks) and token.isalpha() and len(token) <= 4 and toks[index + 1].isdigit():
            product = self.by_sku.get(_sku_key(token + toks[index + 1]))
            if product is not None:
                return product, index + 2
        return None


def _sku_key(sku: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", sku.upper())


def _name_words(name: str) -> list[str]:
    return tokens(normalize(name))


def as_entities(mentions: list[Mention]) -> list[dict[str, object]]:
    """The result contract's products list."""
    out: list[dict[str, object]] = []
    for mention in mentions:
        item: dict[str, object] = {"sku": mention.product.sku, "name": mention.product.name}
        if mention.quantity is not None:
            item["quantity"] = mention.quantity
        out.append(item)
    return out
