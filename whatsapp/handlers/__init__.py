"""Intent handlers: one module per intent, each turning a message into a plan.

Importing this package imports every handler module, because a handler registers itself on
import and one that was never imported would silently never be chosen.

Routing (whatsapp.handlers.registry.plan, then .select), checked in this order:

0. the whole text an opt-out or opt-in keyword      -> opt_out (whatever the intent; opt_out.py)
1. intent UNKNOWN                                  -> fallback, reason "unknown_intent"
2. confidence < business.threshold_for(intent)     -> fallback, reason "low_confidence"
   (defaults: ORDER_REQUEST 0.85, COMPLAINT 0.6, others 0.7; a confidence equal to the
   threshold is handled; Business.confidence_thresholds overrides per intent)
3. the highest-priority handler for the intent whose can_handle() is True (ties by name)
4. none can handle it (required entities missing) -> fallback, reason "missing_entities"

Each handler module's docstring states its plan (actions in order, reply, escalation, where
the lead moves).

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
