"""How bad a complaint is: high when the customer's health, money or patience is at stake,
low when they say themselves it is minor, medium otherwise."""

from __future__ import annotations

import re

_HIGH = re.compile(
    r"\b(refund|money back|disgusting|sick|mold|mould|hair|never (arrived|came)|worst|unacceptable|ridiculous"
    r"|lawyer|food poisoning|reembolso|plata de vuelta|dinero de vuelta|asco|enferm\w*|moho|pelo|nunca llego"
    r"|pesim[oa]|inaceptable|verguenza|dinheiro de volta|nojo|passou mal|mofo|cabelo|nunca chegou|pessim[oa]"
    r"|inaceitavel|absurdo|plastic|plastico|choked|se ahoga|engasgou)\b|!{3,}"
)
_LOW = re.compile(
    r"\b(a bit|slightly|small issue|a little|minor|not a big deal|un poco|algo|nada grave|um pouco|meio"
    r"|nada demais|pequeno)\b"
)

LOW, MEDIUM, HIGH = "low", "medium", "high"


def severity(normalized: str) -> str:
    if _HIGH.search(normalized):
        return HIGH
    if _LOW.search(normalized):
        return LOW
    return MEDIUM
