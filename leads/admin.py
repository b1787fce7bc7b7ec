"""Admin for businesses, catalogs, leads and what the pipeline did for them.

Businesses and their catalogs are edited here. Everything else is written by the
pipeline under idempotency keys and state rules (leads move forward only, each
move an activity), so it is shown read-only. A lead's activity log cannot be
edited or deleted from anywhere: the database refuses it too.
"""

from __future__ import annotations

import logging
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest

from config.redaction import origin
from core.admin_display import ReadOnlyModelAdmin, ReadOnlyTabularInline, pre_json
from leads.models import (
    Business,
    CallbackRequest,
    Lead,
    LeadActivity,
    Order,
    OrderLine,
    Product,
    ReviewFlag,
    SalesNotification,
    SupportTicket,
)

log = logging.getLogger(__name__)
ROUTING_PERMISSION = "leads.change_business_routing"


class WriteOnlyURLInput(forms.URLInput):
    """Never renders a value, not even the one just typed when the form comes back with an error."""

    def format_value(self, value: Any) -> None:
        return None


class HttpsURLField(forms.URLField):
    """A URL field that reads a bare host as https (Django 6's default, asked for now)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("assume_scheme", "https")
        super().__init__(**kwargs)


class BusinessForm(forms.ModelForm):
    """The webhook secret is never rendered: one can set a new one or clear it, not read it.

    The webhook URL is treated the same way, since a path or a query often holds a token:
    the page shows only its origin (scheme://host:port), and takes a new URL (empty keeps
    the current one). It is checked by the model's validator (https, no user:password@, no
    loopback, private or metadata address; leads.models.validate_sales_webhook_url), and
    the phone-number id must be digits.
    """

    new_webhook_secret = forms.CharField(
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False),
        help_text='Signs sales webhooks (X-Signature: t=<unix time>,v1=<HMAC-SHA256 of "t.body">). '
        "Leave empty to keep the current one.",
    )
    clear_webhook_secret = forms.BooleanField(required=False, help_text="Stop signing webhooks.")
    sales_webhook_url = forms.URLField(
        required=False,
        assume_scheme="https",
        label="New sales webhook URL",
        widget=WriteOnlyURLInput,
        help_text="Where NOTIFY_SALES posts (https, no user:password@). Leave empty to keep the current one.",
    )
    clear_sales_webhook_url = forms.BooleanField(
        required=False, help_text="No webhook: notifications are recorded, not sent."
    )

    class Meta:
        model = Business
        # An allow-list, so a field added to Business later (a secret, say) is not editable
        # until someone lists it here; sales_webhook_secret is set only through the fields above.
        fields = [
            "business_id",
            "tenant_id",
            "display_name",
            "is_active",
            "phone_number_id",
            "replies_enabled",
            "default_language",
            "confidence_thresholds",
            "sales_webhook_url",
        ]
        # Where the admin builds the model's own field (a form without the routing
        # permission, whose declared URL field is dropped).
        field_classes = {"sales_webhook_url": HttpsURLField}

    def clean_sales_webhook_url(self) -> str:
        if self.cleaned_data.get("sales_webhook_url"):
            return self.cleaned_data["sales_webhook_url"]
        return (
            "" if self.data.get(self.add_prefix("clear_sales_webhook_url")) else (self.instance.sales_webhook_url or "")
        )

    def clean(self) -> dict[str, Any]:
        """One active business per phone-number id. The database's constraint says so too;
        checked here as well because a user who may not change routing has no
        phone-number field in the form, so Django would not check it when they reactivate
        a business whose number another one has taken since."""
        cleaned = super().clean() or {}
        number = cleaned.get("phone_number_id", self.instance.phone_number_id)
        active = cleaned.get("is_active", self.instance.is_active)
        if number and active:
            taken = Business.objects.filter(is_active=True, phone_number_id=number).exclude(pk=self.instance.pk)
            other = taken.values_list("business_id", flat=True).first()
            if other is not None:
                raise ValidationError(
                    f"The active business {other} already has the WhatsApp phone-number id {number}: one number "
                    "belongs to one active business (deactivate the other first).",
                    code="phone_number_taken",
                )
        return cleaned

    def save(self, commit: bool = True) -> Business:
        business = super().save(commit=False)
        if self.cleaned_data.get("clear_webhook_secret"):
            business.sales_webhook_secret = ""
        elif self.cleaned_data.get("new_webhook_secret"):
            business.sales_webhook_secret = self.cleaned_data["new_webhook_secret"]
        if commit:
            business.save()
            self.save_m2m()
        return business


class ProductInline(admin.TabularInline):
    model = Product
    extra = 0
    fields = ["sku", "name", "price", "currency", "stock"]


@admin.register(Business)
class BusinessAdmin(admin.ModelAdmin):
    form = BusinessForm
    list_display = [
        "business_id",
        "display_name",
        "tenant_id",
        "phone_number_id",
        "replies_enabled",
        "accepts_direct_results",
        "is_active",
        "webhook_secret",
    ]
    list_filter = ["tenant_id", "is_active", "replies_enabled"]
    search_fields = ["business_id", "display_name", "tenant_id"]
    readonly_fields = ["webhook", "webhook_secret", "created_at"]
    fields = [
        "business_id",
        "tenant_id",
        "display_name",
        "is_active",
        "phone_number_id",
        "waba_id",
        "accepts_direct_results",
        "replies_enabled",
        "default_language",
        "confidence_thresholds",
        "webhook",
        "sales_webhook_url",
        "clear_sales_webhook_url",
        "webhook_secret",
        "new_webhook_secret",
        "clear_webhook_secret",
        "created_at",
    ]
    inlines = [ProductInline]
    # Shown and set only with ROUTING_PERMISSION (the write-only fields of BusinessForm,
    # and the two ids, which are shown read-only without it).
    ROUTING_INPUTS = ("sales_webhook_url", "clear_sales_webhook_url", "new_webhook_secret", "clear_webhook_secret")
    ROUTING_IDS = ("phone_number_id", "waba_id")

    def has_routing_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(ROUTING_PERMISSION)

    def get_fields(self, request: HttpRequest, obj: Business | None = None) -> Any:
        fields = list(super().get_fields(request, obj))
        if self.has_routing_permission(request):
            return fields
        return [f for f in fields if f not in self.ROUTING_INPUTS]

    def get_readonly_fields(self, request: HttpRequest, obj: Business | None = None) -> list[str]:
        readonly = list(super().get_readonly_fields(request, obj))
        if self.has_routing_permission(request):
            return readonly
        # Declared form fields named here are dropped from the form itself (ModelAdmin.get_form),
        # so a forged POST of a new URL or secret is not even read.
        return [*readonly, *self.ROUTING_IDS, *self.ROUTING_INPUTS]

    def save_model(self, request: HttpRequest, obj: Business, form: forms.ModelForm, change: bool) -> None:
        """Each routing change is logged (which field, by whom; the URL's origin only, never
        its path or the secret), and refused outright without the permission."""
        before = Business.objects.filter(pk=obj.pk).values(*Business.ROUTING_FIELDS).first() if change else None
        before = before or dict.fromkeys(Business.ROUTING_FIELDS, "")
        changed = [f for f in Business.ROUTING_FIELDS if (getattr(obj, f) or "") != (before[f] or "")]
        if changed and not self.has_routing_permission(request):
            raise PermissionDenied(f"changing {', '.join(changed)} needs the permission {ROUTING_PERMISSION}")
        super().save_model(request, obj, form, change)
        if changed:
            log.warning(
                "business %s: routing changed by %s: %s",
                obj.business_id,
                request.user.get_username(),
                "; ".join(self._describe(f, before[f] or "", getattr(obj, f) or "") for f in changed),
            )

    @staticmethod
    def _describe(field: str, old: str, new: str) -> str:
        if field == "sales_webhook_secret":
            return f"{field} {'cleared' if not new else 'set'}"
        if field == "sales_webhook_url":
            return f"{field} {origin(old) if old else 'none'} -> {origin(new) if new else 'none'} (paths hidden)"
        return f"{field} {old or 'none'} -> {new or 'none'}"

    @admin.display(description="sales webhook")
    def webhook(self, obj: Business) -> str:
        if not obj.sales_webhook_url:
            return "not set"
        return f"{origin(obj.sales_webhook_url)}/… (path and query hidden: they may hold a token)"

    @admin.display(description="webhook secret")
    def webhook_secret(self, obj: Business) -> str:
        return "set (hidden)" if obj.sales_webhook_secret else "not set"


class LeadActivityInline(ReadOnlyTabularInline):
    model = LeadActivity
    # Every column shown, none editable: one tuple serves as both.
    fields = readonly_fields = ("created_at", "kind", "from_state", "to_state", "processing_id", "detail")
    ordering = ["created_at", "id"]


@admin.register(Lead)
class LeadAdmin(ReadOnlyModelAdmin):
    list_display = [
        "lead_id",
        "customer",
        "business",
        "tenant",
        "state",
        "needs_review",
        "opted_out",
        "last_inbound_at",
        "updated_at",
    ]
    list_filter = [
        "business",
        "business__tenant_id",
        "state",
        "needs_review",
        ("opted_out_at", admin.EmptyFieldListFilter),
    ]
    # A customer is found by any name Meta gave them: number, BSUID, username, or an old lead id.
    search_fields = ["lead_id", "customer_name", "=wa_id", "=user_id", "=parent_user_id", "username", "=aliases__alias"]
    list_select_related = ["business"]
    inlines = [LeadActivityInline]
    actions = ["opt_out_customers", "opt_in_customers"]

    def has_erase_customer_permission(self, request: HttpRequest) -> bool:
        """The erase action (added by whatsapp.admin) is for users with leads.erase_customer."""
        return request.user.has_perm("leads.erase_customer")

    def has_change_opt_out_permission(self, request: HttpRequest) -> bool:
        """The opt-out actions are for users with leads.change_opt_out (the lead is read-only otherwise)."""
        return request.user.has_perm("leads.change_opt_out")

    @admin.display(description="opted out", boolean=True, ordering="opted_out_at")
    def opted_out(self, obj: Lead) -> bool:
        return obj.opted_out_at is not None

    @admin.action(permissions=["change_opt_out"], description="Opt selected customers out of automatic messages")
    def opt_out_customers(self, request: HttpRequest, queryset: QuerySet[Lead]) -> None:
        """No reply or template goes to them from now on; each change an `opted_out` activity naming who."""
        self._change_opt_out(request, queryset, opting_out=True)

    @admin.action(permissions=["change_opt_out"], description="Opt selected customers back in to automatic messages")
    def opt_in_customers(self, request: HttpRequest, queryset: QuerySet[Lead]) -> None:
        """Replies and templates go to them again; each change an `opted_in` activity naming who."""
        self._change_opt_out(request, queryset, opting_out=False)

    def _change_opt_out(self, request: HttpRequest, queryset: QuerySet[Lead], *, opting_out: bool) -> None:
        by = request.user.get_username()
        leads = list(queryset)
        changed = [
            lead.lead_id for lead in leads if (lead.opt_out if opting_out else lead.opt_in)(source="admin", by=by)
        ]
        verb = "opted out" if opting_out else "opted back in"
        if changed:
            log.warning("%s %s by admin user %s", ", ".join(changed), verb, by)
        unchanged = len(leads) - len(changed)
        self.message_user(
            request, f"{len(changed)} customer(s) {verb}" + (f"; {unchanged} already were" if unchanged else "") + "."
        )

    @admin.display(description="tenant", ordering="business__tenant_id")
    def tenant(self, obj: Lead) -> str:
        return obj.business.tenant_id

    @admin.display(description="customer")
    def customer(self, obj: Lead) -> str:
        return obj.display_name


class OrderLineInline(ReadOnlyTabularInline):
    model = OrderLine
    # Every column shown, none editable: one tuple serves as both.
    fields = readonly_fields = ("sku", "name", "quantity", "unit_price", "line_total")


class EffectAdmin(ReadOnlyModelAdmin):
    """What an action executor wrote, searchable by the message that caused it."""

    search_fields = ["processing_id", "idempotency_key", "lead__lead_id"]
    list_select_related = ["business", "lead"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("business", "lead")


@admin.register(Order)
class OrderAdmin(EffectAdmin):
    list_display = ["__str__", "business", "lead", "status", "total", "currency", "created_at"]
    list_filter = ["status", "business"]
    search_fields = [*EffectAdmin.search_fields, "reference"]
    inlines = [OrderLineInline]


@admin.register(SupportTicket)
class SupportTicketAdmin(EffectAdmin):
    list_display = ["__str__", "business", "lead", "status", "priority", "order_reference", "created_at"]
    list_filter = ["status", "priority", "business"]


@admin.register(CallbackRequest)
class CallbackRequestAdmin(EffectAdmin):
    list_display = ["__str__", "business", "lead", "status", "preferred_time", "created_at"]
    list_filter = ["status", "business"]


@admin.register(SalesNotification)
class SalesNotificationAdmin(EffectAdmin):
    list_display = ["__str__", "business", "lead", "kind", "status", "webhook", "http_status", "attempts", "created_at"]
    list_filter = ["status", "kind", "business"]
    readonly_fields = ["webhook", "sent_payload"]
    # The URL may hold a token in its path or query: only its origin is shown.
    exclude = ["payload", "webhook_url"]

    @admin.display(description="webhook")
    def webhook(self, obj: SalesNotification) -> str:
        return origin(obj.webhook_url) if obj.webhook_url else "-"

    @admin.display(description="payload sent")
    def sent_payload(self, obj: SalesNotification) -> str:
        return pre_json(obj.payload)


@admin.register(ReviewFlag)
class ReviewFlagAdmin(EffectAdmin):
    list_display = ["__str__", "business", "lead", "reason", "status", "created_at"]
    list_filter = ["status", "reason", "business"]
