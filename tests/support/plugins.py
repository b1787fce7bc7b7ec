"""A plugin the tests load into their workers through WHATSAPP_PLUGINS: a
complaint handler that outranks the real one when the customer asks for
"compensation-drill", and an action that always fails for good. Together they
put NOTIFY_SALES before a failing step, so its retraction is exercised.

A second drill ("bug") plans three actions whose second one has a bug (an error
no executor raises on purpose), for the errback that compensates such a run."""

from __future__ import annotations

from typing import Any

from whatsapp.actions.base import ActionContext, ActionExecutor, PermanentActionError
from whatsapp.actions.create_support_ticket import CreateSupportTicket
from whatsapp.actions.flag_for_review import FlagForReview
from whatsapp.actions.notify_sales import NotifySales
from whatsapp.actions.registry import register as register_action
from whatsapp.contracts.result import Intent
from whatsapp.handlers.base import HandlerResult, IntentHandler, MessageContext, PlannedAction
from whatsapp.handlers.registry import register


@register_action
class AlwaysFail(ActionExecutor):
    name = "ALWAYS_FAIL"

    def execute(self, context: ActionContext) -> dict[str, Any]:
        raise PermanentActionError("this step always fails (test plugin)")

    def compensate(self, context: ActionContext, result: dict[str, Any]) -> dict[str, Any]:
        return {}


@register
class CompensationDrill(IntentHandler):
    intent = Intent.COMPLAINT
    priority = 100
    name = "compensation_drill"

    def can_handle(self, context: MessageContext) -> bool:
        return context.event.entities.model_extra.get("drill") == "compensation"

    def handle(self, context: MessageContext) -> HandlerResult:
        return HandlerResult(
            handler=self.name,
            actions=[PlannedAction(NotifySales, {"kind": "complaint"}), PlannedAction(AlwaysFail)],
            reply_text="drill",
            note="test plugin",
        )


@register_action
class DivideByZero(ActionExecutor):
    name = "DIVIDE_BY_ZERO"

    def execute(self, context: ActionContext) -> dict[str, Any]:
        return {"share": 1 / len(context.params)}  # planned with no params: ZeroDivisionError

    def compensate(self, context: ActionContext, result: dict[str, Any]) -> dict[str, Any]:
        return {}


@register
class BugDrill(IntentHandler):
    intent = Intent.COMPLAINT
    priority = 100
    name = "bug_drill"

    def can_handle(self, context: MessageContext) -> bool:
        return context.event.entities.model_extra.get("drill") == "bug"

    def handle(self, context: MessageContext) -> HandlerResult:
        return HandlerResult(
            handler=self.name,
            actions=[
                PlannedAction(CreateSupportTicket, {"severity": "high"}),
                PlannedAction(DivideByZero),
                PlannedAction(FlagForReview, {"reason": "bug drill"}),
            ],
            reply_text="drill",
            note="test plugin",
        )
