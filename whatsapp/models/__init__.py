"""The whatsapp app's models, one module per stage that owns them; import them from here.

- inbox: ProcessedMessage (the inbox row a message's saga runs from) and DuplicateDelivery;
- saga: SagaStep, one planned action of one run;
- outbound: OutboundMessage (a reply we sent) and DeliveryStatus (what Meta said of it);
- inbound: WebhookDelivery and InboundMessage, what the webhook stored (the request outbox);
- account: WebhookChange (every change of a delivery), MessageTemplate and AccountNotice;
- templates: ReplyTemplate (which template a business sends per ReplyKind outside the window);
- breakers: CircuitBreaker, the admin's page for the breakers kept in Redis;
- turns: ConversationTurn, which of a customer's messages runs now (the others wait).

State changes are methods of these models and their query sets, never written elsewhere.
This package imports no stage of the app: every stage imports it.
"""

from whatsapp.models.account import AccountNotice, MessageTemplate, WebhookChange
from whatsapp.models.breakers import CircuitBreaker
from whatsapp.models.inbound import InboundMessage, WebhookDelivery
from whatsapp.models.inbox import DuplicateDelivery, ProcessedMessage
from whatsapp.models.outbound import DELIVERY_RANK, DeliveryStatus, OutboundMessage, StatusApplied
from whatsapp.models.saga import SagaStep
from whatsapp.models.templates import ReplyKind, ReplyTemplate
from whatsapp.models.turns import ConversationTurn

__all__ = [
    "DELIVERY_RANK",
    "AccountNotice",
    "CircuitBreaker",
    "ConversationTurn",
    "DeliveryStatus",
    "DuplicateDelivery",
    "InboundMessage",
    "MessageTemplate",
    "OutboundMessage",
    "ProcessedMessage",
    "ReplyKind",
    "ReplyTemplate",
    "SagaStep",
    "StatusApplied",
    "WebhookChange",
    "WebhookDelivery",
]
