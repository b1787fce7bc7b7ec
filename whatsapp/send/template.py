"""Which message template replaces a reply once the customer's 24-hour window has closed,
and with which parameters. Asked only on that path (whatsapp.send.reply): a reply inside
the window costs nothing here.

A template is sent when, and only when:

- the handler named the reply's kind, and the business has an active ReplyTemplate for it
  and a WhatsApp Business Account id;
- Meta reports that template APPROVED in a language the customer can read (below), per its
  status webhook or `manage.py templates sync`: PAUSED, REJECTED, DISABLED, PENDING are not sent;
- `_may_send_template(lead, template)` allows it (the opt-out check) and, for a MARKETING
  template, the customer has not stopped marketing messages (Lead.marketing_stopped_at);
- every parameter has a value (Meta refuses an empty one).

Otherwise the reply is skipped and the lead flagged, as before templates existed, with the
reason in the flag's detail.

Language: the reply's language (the customer's, else the business's default, as the
handler wrote the reply) is matched to Meta's codes exactly first ("pt_BR" for "pt-BR"),
then by its primary language: the bare code ("pt"), else its first regional variant in
alphabetical order ("pt_BR" before "pt_PT"). If none is approved, the business's default
language is tried the same way. No other language is sent: a template the customer may not
read is worse than a person following up.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from leads.models import Business, Lead
from whatsapp.models import MessageTemplate, ReplyTemplate, SagaStep
from whatsapp.models.templates import SEND_TIME_FIELDS

APPROVED = "APPROVED"
MARKETING = "MARKETING"
# What the saga's results give a template: action -> {result key: field}.
RESULT_FIELDS = {
    "CREATE_ORDER": {"reference": "order_reference"},
    "CREATE_SUPPORT_TICKET": {"ticket_id": "ticket_number", "order_reference": "order_reference"},
}
# Meta refuses parameters with new lines, tabs or more than four spaces in a row.
_SPACES = re.compile(r"\s+")
MAX_PARAMETER_LENGTH = 1024


@dataclass(frozen=True)
class TemplateChoice:
    name: str
    language: str
    components: list[dict[str, Any]]


@dataclass(frozen=True)
class Decision:
    """A template to send, or why none is (for the review flag's detail)."""

    choice: TemplateChoice | None
    why_not: str = ""


def _may_send_template(lead: Lead, template: MessageTemplate) -> bool:
    """Whether this customer may get this template at all: not once they opted out
    (Lead.opted_out_at, whatsapp.handlers.opt_out). whatsapp.send.reply skips an opted-out
    customer's reply before asking here; this keeps any other caller from sending one."""
    return lead.opted_out_at is None


def choose(
    *, business: Business, lead: Lead, processing_id: str, saga_run: int, kind: str, fields: dict[str, Any] | None
) -> Decision:
    """The template for this reply, or why there is none. Two or three reads: the business's
    ReplyTemplate, Meta's approved languages of it, and the saga's results when a parameter
    needs one (an order's reference)."""
    if not kind:
        return Decision(None, "the reply has no kind a template could stand for")
    if not business.waba_id:
        return Decision(None, "the business has no WhatsApp Business Account id")
    reply = ReplyTemplate.objects.filter(business=business, kind=kind, is_active=True).first()
    if reply is None:
        return Decision(None, f"no active reply template for {kind}")
    fields = dict(fields or {})
    approved = MessageTemplate.objects.filter(waba_id=business.waba_id, name=reply.template_name, status=APPROVED)
    template = pick_language(approved, fields.get("language"), business.default_language)
    if template is None:
        return Decision(None, f"template {reply.template_name} is not approved in the customer's language")
    if not _may_send_template(lead, template):
        return Decision(None, "the customer opted out of automatic messages")
    if template.category == MARKETING and lead.marketing_stopped_at is not None:
        return Decision(None, f"template {template.name} is MARKETING and the customer stopped marketing messages")
    names = [str(name) for name in reply.body_parameters or []]
    if SEND_TIME_FIELDS.intersection(names):
        fields.update(send_time_fields(lead, processing_id, saga_run))
    values = {name: parameter_text(fields.get(name)) for name in names}
    empty = [name for name, value in values.items() if not value]
    if empty:
        return Decision(None, f"template {template.name}: no value for {', '.join(empty)}")
    named = reply.parameter_format == ReplyTemplate.ParameterFormat.NAMED
    parameters = [
        {"type": "text", **({"parameter_name": name} if named else {}), "text": value} for name, value in values.items()
    ]
    components = [{"type": "body", "parameters": parameters}] if parameters else []
    return Decision(TemplateChoice(name=template.name, language=template.language, components=components))


def pick_language(
    templates: Iterable[MessageTemplate], wanted: str | None, default: str | None
) -> MessageTemplate | None:
    """The template in the reply's language, else in the business's (see the module docstring)."""
    by_code = {template.language.replace("-", "_").lower(): template for template in templates}
    for tag in (wanted, default):
        code = (tag or "").strip().replace("-", "_").lower()
        if not code:
            continue
        primary = code.split("_", 1)[0]
        variants = sorted(c for c in by_code if c.split("_", 1)[0] == primary and c != primary)
        for candidate in (code, primary, *variants):
            if candidate in by_code:
                return by_code[candidate]
    return None


def send_time_fields(lead: Lead, processing_id: str, saga_run: int) -> dict[str, str]:
    """The fields known only now: the customer's name, and what the run's actions made."""
    found: dict[str, str] = {"customer_name": lead.customer_name or (f"@{lead.username}" if lead.username else "")}
    steps = SagaStep.objects.filter(
        message__processing_id=processing_id,
        saga_run=saga_run,
        status=SagaStep.Status.SUCCEEDED,
        action__in=list(RESULT_FIELDS),
    ).values_list("action", "result")
    for action, result in steps:
        for key, name in RESULT_FIELDS[action].items():
            value = result.get(key) if isinstance(result, dict) else None
            if value not in (None, "") and not found.get(name):
                found[name] = str(value)
    return found


def parameter_text(value: object) -> str:
    """One line, as Meta takes a parameter."""
    if value is None:
        return ""
    return _SPACES.sub(" ", str(value)).strip()[:MAX_PARAMETER_LENGTH]
