"""Which of en / es / pt a message is in: py3langid's n-gram model, restricted to the three,
plus word evidence.

Short messages fool any detector ("hola" scores as English, "oi" barely as Portuguese), so
words and letters only one of the three languages uses are added to the model's probabilities;
with neither, the business's default language stands.
"""

from __future__ import annotations

import functools
import re

from py3langid.langid import MODEL_FILE, LanguageIdentifier

LANGUAGES = ("en", "es", "pt")

_MARKERS: dict[str, set[str]] = {
    "en": {
        "hi", "hello", "hey", "the", "you", "is", "are", "do", "can", "please", "pls", "plz", "much", "how", "want",
        "have", "any", "my", "thanks", "thx", "morning", "call", "what", "i", "im", "got", "yes", "and",
        "order", "for", "today", "tomorrow", "whats", "someone", "who", "this", "there", "anyone", "wrong",
    },
    "es": {
        "hola", "quiero", "tienen", "hay", "cuanto", "cuesta", "gracias", "porfa", "el", "los", "las", "y", "mi",
        "pedido", "llamar", "necesito", "queda", "buenas", "buenos", "dias", "precio", "por", "favor", "una",
        "todavia", "estaban", "llego", "nadie", "quien", "habla", "dale", "si", "jaja", "xfa", "porfis",
        "les", "manana", "llamame", "vemos", "nos", "hoy", "tenes", "pueden", "puede", "esta", "noche",
        "saludos",
    },
    "pt": {
        "oi", "quero", "tem", "vc", "vcs", "voce", "pra", "pro", "obrigado", "obrigada", "obg", "nao", "ta", "tb",
        "amanha", "ligar", "liga", "um", "uma", "meu", "minha", "quanto", "preco", "valor", "blz", "kkkk", "pfv",
        "pfvr", "td", "bom", "dia", "hoje", "ainda", "ninguem", "queria", "gente", "valeu", "abraco", "sim", "fala",
        "alguem", "ai", "moca", "tava", "vou", "muito", "qto", "ate", "mais", "tchau", "e", "do", "da", "no", "na",
        "ao", "sobre",
    },
}  # fmt: skip
# Letters only one of the three writes: ã õ ç are Portuguese, ñ ¿ ¡ Spanish.
_LETTERS = {"pt": re.compile(r"[ãõç]"), "es": re.compile(r"[ñ¿¡]")}
# How much one marker word counts against the model's probability (0-1).
MARKER_WEIGHT = 0.35
# Below this much evidence in total the message says nothing about its language.
MIN_EVIDENCE = 0.3


@functools.cache
def _identifier() -> LanguageIdentifier:
    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    identifier.set_languages(list(LANGUAGES))
    return identifier


def detect(text: str, toks: list[str], default: str = "en") -> str:
    """toks: the normalized tokens of text (accents off); text keeps its letters for ñ, ã."""
    default = default.split("-")[0].lower()  # a business's "pt-BR" is pt here
    if default not in LANGUAGES:
        default = "en"
    if not toks:
        return default
    evidence = dict.fromkeys(LANGUAGES, 0.0)
    for language, markers in _MARKERS.items():
        evidence[language] += MARKER_WEIGHT * sum(1 for t in toks if t in markers)
    lowered = text.lower()
    for language, letters in _LETTERS.items():
        if letters.search(lowered):
            evidence[language] += 1.0
    # The model needs a few words; on one or two it mostly guesses.
    if len(toks) >= 3:
        ranked = dict(_identifier().rank(text))
        for language in LANGUAGES:
            evidence[language] += float(ranked.get(language, 0.0))
    best = max(LANGUAGES, key=lambda language: evidence[language])
    if evidence[best] < MIN_EVIDENCE:
        return default
    return best
