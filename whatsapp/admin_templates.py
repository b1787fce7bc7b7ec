"""Admin for the templates a business sends once a customer's 24-hour window has closed:
one ReplyTemplate per reply kind, naming a template Meta approved (the Message templates
page, filled by Meta's status webhooks and `manage.py templates sync`). Editable by whoever
has the model's permissions; each change is a LogEntry, as for any admin change."""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html_join

from whatsapp.models import MessageTemplate, ReplyTemplate


@admin.register(ReplyTemplate)
class ReplyTemplateAdmin(admin.ModelAdmin):
    list_display = [
        "business",
        "kind",
        "template_name",
        "parameter_format",
        "body_parameters",
        "is_active",
        "languages",
    ]
    list_filter = ["kind", "is_active", "business"]
    search_fields = ["template_name", "business__business_id", "business__display_name"]
    list_select_related = ["business"]
    readonly_fields = ["languages", "updated_at"]

    @admin.display(description="at Meta (language: status, category)")
    def languages(self, obj: ReplyTemplate) -> str:
        """What Meta last said of this name, per language: only APPROVED ones are sent."""
        if not obj.pk or not obj.business.waba_id:
            return "-"
        rows = MessageTemplate.objects.filter(waba_id=obj.business.waba_id, name=obj.template_name).order_by("language")
        return (
            format_html_join(", ", "{}: {} {}", ((t.language, t.status or "?", t.category.lower()) for t in rows))
            or "not known to Meta (run `manage.py templates sync`)"
        )
