"""What an intent handler receives and returns.

Handlers decide; they do not act. A handler turns one message into a plan
(actions, a reply, whether to escalate, where the lead should move) and the
saga carries the plan out, so deciding stays pure and easy to test.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from leads.models import Business, Lead, Product
from whatsapp.actions.base import ActionExecutor
from whatsapp.actions.registry import executors
from whatsapp.contracts import result as contract
from whatsapp.contracts.result import AIResultEvent, Intent


@dataclass(frozen=True, init=False)
class PlannedAction:
    """One saga step: the executor to run and the JSON-safe parameters it needs.

    A handler names the executor by its class, so a misspelt action fails when the handler's
    module is imported; a bare name (a plugin naming another's action) is accepted too. Either
    way the name is checked against the registry here, when the plan is made: a step the saga
    could not find would otherwise surface only when its task runs, after earlier steps acted.
    """

    name: str
    params: dict[str, Any]

    def __init__(self, action: type[ActionExecutor] | str, params: dict[str, Any] | None = None) -> None:
        name = action if isinstance(action, str) else action.name
        executors.get(name)  # LookupError: "no action executor registered as 'X'; known: ..."
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "params", {} if params is None else params)


class Catalog(Mapping[str, Product]):
    """A business's products by SKU, read from the database the first time a handler looks.

    Only the handlers of products (orders, pricing, availability) look; the others cost no
    query. Read fresh for each message, never cached across messages: stock changes with
    every order, and the replies quote it."""

    def __init__(self, business: Business) -> None:
        self._business = business
        self._products: dict[str, Product] | None = None

    def _loaded(self) -> dict[str, Product]:
        if self._products is None:
            self._products = {p.sku: p for p in Product.objects.filter(business=self._business)}
        return self._products

    def __getitem__(self, sku: str) -> Product:
        return self._loaded()[sku]

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaded())

    def __len__(self) -> int:
        return len(self._loaded())


@dataclass
class MessageContext:
    event: AIResultEvent
    business: Business
    lead: Lead
    catalog: Mapping[str, Product]
    """The business's products by SKU (a Catalog, or any mapping in tests)."""

    @property
    def language(self) -> str:
        return self.event.entities.language or self.business.default_language or "en"

    @property
    def below_threshold(self) -> bool:
        return self.event.confidence < self.business.threshold_for(self.event.intent.value)


@dataclass
class HandlerResult:
    handler: str
    actions: list[PlannedAction]
    reply_text: str | None
    should_escalate: bool = False
    lead_state: str | None = None
    """The state the lead should move to, if any (see leads.states)."""
    note: str = ""
    """Why the handler decided this, for the lead's activity log (no customer text)."""
    reply_kind: str = ""
    """What the reply says (whatsapp.models.ReplyKind): the template sent instead once the
    24-hour window has closed. Empty: no template, the reply is skipped and flagged then."""
    reply_fields: dict[str, str] = field(default_factory=dict)
    """What the reply was made of (whatsapp.models.templates.FIELDS), for the template's parameters."""
    consent: str = ""
    """"opt_out" or "opt_in" when the message changes whether the customer gets automatic
    messages (whatsapp.handlers.opt_out); the plan stage applies it to the lead."""


class IntentHandler(ABC):
    """A strategy for one intent. Subclasses register themselves with
    whatsapp.handlers.registry.register and are chosen by priority."""

    intent: ClassVar[Intent]
    priority: ClassVar[int] = 0
    name: ClassVar[str]

    @abstractmethod
    def can_handle(self, context: MessageContext) -> bool: ...

    @abstractmethod
    def handle(self, context: MessageContext) -> HandlerResult: ...


def resolve_product(catalog: Mapping[str, Product], requested: contract.Product) -> Product | None:
    """Find the catalog product the AI meant, or None.

    A given SKU is trusted over the name and never falls back to a name match: a wrong SKU
    means the AI misread something, and quietly picking a same-named product would act on a
    guess. The SKU comparison forgives case only because models often lower-case codes. A
    name that matches several products also resolves to nothing, for the same reason.
    """
    if requested.sku:
        if requested.sku in catalog:
            return catalog[requested.sku]
        wanted = requested.sku.casefold()
        matches = [product for sku, product in catalog.items() if sku.casefold() == wanted]
    else:
        wanted = " ".join(requested.name.split()).casefold()
        matches = [product for product in catalog.values() if " ".join(product.name.split()).casefold() == wanted]
    return matches[0] if len(matches) == 1 else None
