"""Intent evidence: weighted cue patterns per intent, in English, Spanish and Portuguese at once.

All three languages' cues are always read, because customers mix them ("quiero order 4
empanadas please"). Patterns run on the normal form (lower case, no accents). Weights say how
sure a cue is on its own: "refund" names a complaint, "order" may be one ("my order never
arrived") or not. The scores are not probabilities; confidence.py turns them into one.

No pattern has an unbounded gap between two literals (`what do .* cost` took 1.2 s on 64k
characters, quadratic in the text): a gap is bounded (`[^.?!\n]{0,40}?`) within a sentence.
"""

from __future__ import annotations

import re

ORDER = "ORDER_REQUEST"
PRICING = "PRICING_INQUIRY"
COMPLAINT = "COMPLAINT"
AVAILABILITY = "AVAILABILITY_INQUIRY"
SCHEDULE = "SCHEDULE_CALL"
UNKNOWN = "UNKNOWN"
INTENTS = (ORDER, PRICING, COMPLAINT, AVAILABILITY, SCHEDULE, UNKNOWN)

_CUES: dict[str, list[tuple[str, float]]] = {
    ORDER: [
        (r"\b(i )?(want|wanna|would like|i'?d like|id like)\b", 2.0),
        (r"\b(i'?ll|ill|i will) take\b|\bgimme\b|\bgive me\b|\bsend me\b|\bcan i (get|have|order)\b", 2.0),
        (r"\b(place|make) an order\b|\bto order\b|\border:", 2.0),
        (r"\b(reserve|book me|put aside|prepare|deliver|add)\b", 1.5),
        (r"\b(need|buy|gonna need|pick ?up|pickup)\b", 1.0),
        (r"\border\b", 0.8),
        (r"\b(quiero|quisiera|voy a querer|encargar|encargo|dame|me das|ponme|haceme|hazme)\b", 2.0),
        (r"\b(mandame|mandenme|enviar|reservame|reservar|separan|separar|agrega|agregar|me llevo)\b", 1.5),
        (r"\b(necesito|comprar|preparar|retirar|para el (sabado|viernes|domingo))\b", 1.0),
        (r"\b(pedir|hacer un pedido|les hago un pedido|pedido:)", 1.5),
        (r"\b(quero|queria|vou querer|encomendar|me ve|me manda|manda|separa|reserva|adiciona|faz)\b", 2.0),
        (r"\b(preciso|vou levar|levar|fazer um pedido|vou fazer um pedido)\b", 1.2),
        (r"\b(pra retirar|pro sabado|pra sexta|pra amanha)\b", 0.8),
        (r"\b\d+\s*x\b|\bx\s*\d+\b", 1.0),
    ],
    PRICING: [
        (r"\bhow much\b|\bhw much\b|\bhow mcuh\b|\bprice|\bcost|\bwhat do\b[^.?!\n]{0,40}?\bcost", 3.0),
        (r"\btotal\b|\bdiscount|\bcharge (for|extra)\b|\bcheap\w*|\bexpensive\b|\$", 1.5),
        (r"\b(barat[oa]s?|cobran aparte|cobram a parte|mas barat[oa]|mais barat[oa])\b", 1.5),
        (r"\b(cuanto|cuanta|cuantos|precio|precios|cuesta|cuestan|valen|vale|costo|descuento|lista de precios)\b", 3.0),
        (r"\b(a cuanto|cuanto sale|cuanto me sale|cobran|cobra)\b", 2.0),
        (r"\b(quanto|qto|qnto|preco|precos|valor|custa|custam|desconto|tabela)\b", 3.0),
        (r"\b(quanto fica|quanto sai|cobram)\b", 1.5),
    ],
    AVAILABILITY: [
        (r"\b(do|does) (you|u|ya|you guys|u guys) (have|sell|do|still have)\b", 3.0),
        (r"\b(you|u) (got|have)\b|\bstill got\b|\bgot any\b|\bany .{0,30}\bleft\b", 2.5),
        (r"\bis there\b|\bare there\b|\bin stock\b|\bout of stock\b|\bavailab", 2.5),
        (r"\b(are|r) (you|u)( guys)? open\b|\bopen (on|now|right now|today)\b|\bready yet\b|\bout yet\b", 1.5),
        (r"\bwhen will you have\b|\bleft\b|\bstill (have|got)\b|\bsold out\b|\bcan i still get\b", 1.5),
        (
            r"\b(se agotan|agotad[oa]s?|consigo|abiertos|abertos|esgotad[oa]s?|acabou|ja saiu|ainda (tem|consigo))\b",
            1.5,
        ),
        (r"\b(tienen|tenes|tiene|tenian|hay|queda|quedan|les queda|stock|disponible|disponibles)\b", 2.5),
        (r"\b(todavia tienen|estan abiertos|abren|salieron|vuelven a tener)\b", 2.0),
        (r"\b(tem|tinha|tem ai|vcs tem|vc tem|voce tem|sobrou|disponivel|disponiveis|estoque)\b", 2.5),
        (r"\b(ainda tem|abrem|ja saiu|volta a ter)\b", 2.0),
    ],
    COMPLAINT: [
        (r"\b(refund|money back|disgusting|gross|sick|mold|mould|hair in|never (arrived|came)|worst)\b", 3.5),
        (r"\b(unacceptable|ridiculous|terrible|awful|complain|complaint|rude|not happy|unhappy)\b", 3.0),
        (r"\b(stale|burnt|burned|raw|crushed|melted|damaged|missing|wrong order|got the wrong|cold)\b", 2.5),
        (r"\b(disappointed|annoyed|charged me twice|twice|late|too sweet|dry|hard)\b", 2.0),
        (r"\b(reembolso|plata de vuelta|dinero de vuelta|asco|enfermo|enferma|se enfermo|moho|pelo en)\b", 3.5),
        (r"\b(nunca llego|no llego|pesima|pesimo|inaceptable|verguenza|queja|reclamo|grosera|grosero)\b", 3.0),
        (r"\b(duros|duro|viejos|aplastados|quemado|crudos|derretidos|rota|roto|equivocad[oa]|falto|faltan)\b", 2.5),
        (r"\b(decepcionado|decepcionada|molesto|molesta|dos veces|de mas|seco|frio|tarde y)\b", 2.0),
        (r"\b(no me gusto|no me gustaron)\b", 2.5),
        (r"\b(dinheiro de volta|nojo|passou mal|mofo|cabelo|nunca chegou|nao chegou|pessimo|pessima)\b", 3.5),
        (r"\b(inaceitavel|absurdo|reclamacao|grossa|grosso|errad[oa]|faltou|faltaram|atrasou|atrasado)\b", 3.0),
        (r"\b(velhos|amassados|amassada|queimado|crus|derretidos|decepcionada|decepcionado|chateada|chateado)\b", 2.5),
        (r"\b(nao gostei|duas vezes|demais|seco)\b", 2.0),
        (r"[!]{3,}|\U0001f621|\U0001f620", 1.0),
        (r"\b(soggy|plastic|choked|tasted (old|off|weird)|expected better|waiting (on|for)|nobody tells)\b", 2.5),
        (r"\b(blandos|plastico|se ahoga|gusto a viejo|esperaba mas|espero el pedido|nadie me dice|maleducado)\b", 2.5),
        (r"\b(murchos|engasgou|gosto de velho|esperava mais|esperando o pedido|ninguem me fala|mal educad[oa])\b", 2.5),
        (r"\b(faltaba|faltando|half of them|la mitad|metade)\b", 1.5),
        # Asking for the owner is escalating, not booking a call.
        (r"\b(the owner|the manager|el duen[oa]|o don[oa]|o gerente|el gerente)\b", 2.0),
    ],
    SCHEDULE: [
        (r"\bcall me\b|\bcall back\b|\bcallback\b|\bring me\b|\bphone me\b|\bgive me a call\b", 4.0),
        (r"\b(a|quick|phone) call\b|\bon the phone\b|\btalk to someone\b|\bspeak (to|with)\b|\bcall\b", 2.5),
        (r"\bllam\w*\b|\bhablar por telefono\b|\bpor telefono\b", 4.0),
        (r"\bhablar con alguien\b|\bagendar\b|\bcoordinar\b", 1.5),
        (r"\blig(ar|a|ue|uem|acao|acoes)\b|\bpor telefone\b", 4.0),
        (r"\bfalar com alguem\b|\bmarcar\b", 1.5),
    ],
    UNKNOWN: [
        (r"\b(wrong chat|chat equivocado|chat errado|me equivoque|instagram|insta|wifi)\b", 3.0),
    ],
}

_COMPILED = {intent: [(re.compile(p), w) for p, w in cues] for intent, cues in _CUES.items()}


def scores(normalized: str, *, has_products: bool, has_quantities: bool) -> dict[str, float]:
    """Each intent's evidence in one message (0 where there is none)."""
    found = {intent: sum(w for pattern, w in cues if pattern.search(normalized)) for intent, cues in _COMPILED.items()}
    # Counted products with nothing else said are an order ("2 croissants and a baguette").
    if has_quantities:
        found[ORDER] += 1.0
    elif has_products and "?" in normalized:
        found[AVAILABILITY] += 0.5
    return found


def rank(found: dict[str, float]) -> list[tuple[str, float]]:
    return sorted(found.items(), key=lambda item: (-item[1], INTENTS.index(item[0])))
