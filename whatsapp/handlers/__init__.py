"""Intent handlers: one module per intent, each turning a message into a plan.

Importing this package imports every handler module, because a handler registers itself on
import and one that was never imported would silently never be chosen.

Routing (whatsapp.handlers.registry.select), checked in this order:

1. intent UNKNOWN                                  -> fallback, reason "unknown_intent"
2. confidence < business.threshold_for(intent)     -> fallback, reason "low_confidence"
   (defaults: ORDER_REQUEST 0.85, COMPLAINT 0.6, others 0.7; a confidence equal to the
   threshold is handled; Business.confidence_thresholds overrides per intent)
3. the highest-priority handler for the intent whose can_handle() is True (ties by name)
4. none can handle it (required entities missing) -> fallback, reason "missing_entities"

Plans (actions in order; lead_state None means "leave the lead's state alone"):

====================  ==========================  ==============================================  ==========  ==========
intent / handler      requires                    actions                                         escalate    lead_state
====================  ==========================  ==============================================  ==========  ==========
ORDER_REQUEST         entities.products           all resolve and stock >= quantity (default 1):  no          CONVERTED
  "order"                                         CREATE_ORDER {"lines": [{"sku", "quantity"}]},
                                                  NOTIFY_SALES {"kind": "order"};
                                                  reply: items, line amounts, total + currency
                                                  else: FLAG_FOR_REVIEW {"reason":                yes         QUALIFIED
                                                  "unknown_product" | "out_of_stock", "skus"};
                                                  reply: a person will confirm; no order
PRICING_INQUIRY       entities.products           NOTIFY_SALES {"kind": "pricing"};               no          CONTACTED
  "pricing"                                       reply: "name: 6.50 USD" per known product,
                                                  "name: not in our catalog" otherwise
AVAILABILITY_INQUIRY  entities.products           none; reply: per product "in stock (N           no          CONTACTED
  "availability"                                  available)", "out of stock" or not in catalog
COMPLAINT             nothing                     CREATE_SUPPORT_TICKET {"severity": severity or  no          None
  "complaint"                                     "medium", "order_reference": ref or None};
                                                  severity "high" adds FLAG_FOR_REVIEW            yes
                                                  {"reason": "high_severity_complaint"}, then
                                                  NOTIFY_SALES {"kind": "complaint"};
                                                  reply: apology + ticket acknowledgement
SCHEDULE_CALL         entities.preferred_time     SCHEDULE_CALL {"preferred_time": ISO string},   no          QUALIFIED
  "schedule_call"                                 NOTIFY_SALES {"kind": "callback"};
                                                  reply: "on 2026-11-27 at 15:00 (UTC+01:00)"
UNKNOWN and review    nothing                     FLAG_FOR_REVIEW {"reason": "unknown_intent" |   yes         None
  "fallback"                                      "low_confidence" | "missing_entities",
                                                  "intent": the event's intent}; reply: fixed
                                                  "Thanks for your message! A member of our team
                                                  will get back to you shortly."
====================  ==========================  ==============================================  ==========  ==========

Catalog matching (base.resolve_product): by SKU when the AI gave one (exact, then ignoring
case; never falling back to the name), else by name ignoring case and spacing; a name that
matches several products counts as unknown. In FLAG_FOR_REVIEW "skus" lists the requested SKU,
or the requested name when no SKU was given; an unknown product wins over a stock shortage.
An order asking for the same product twice becomes one line with the summed quantity.

Replies use context.language by its primary subtag (en, es, pt; "pt-BR" is Portuguese; any
other language gets English). Each handler module keeps its own templates (a replies.Replies
table); they name the business but never quote the customer's message. HandlerResult.note
says why, without customer text.

Adding an intent's handler: a module here with a registered IntentHandler (@register; its
name, plan and reply texts live in that module), plus its line in the import below. Plans
name actions by executor class (PlannedAction(CreateOrder, {...})), checked when the plan is
made. A deployment adds its own through the WHATSAPP_PLUGINS setting instead (whatsapp/apps.py).
"""
from whatsapp.handlers import availability, complaint, fallback, order, pricing, schedule_call  # noqa: F401
