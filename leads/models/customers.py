"""The customers of each business (leads), the names Meta gives them, and their history."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NoReturn

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.utils import timezone

from leads.models.business import Business
from leads.models.identity import UPSERT_SQL, CustomerIds, lock_identifiers, new_lead_id


@dataclass
class Resolution:
    lead: Lead
    created: bool = False
    # What this message added to a lead known by the other identifier ("user_id", "wa_id").
    joined: list[str] = field(default_factory=list)


class LeadQuerySet(models.QuerySet["Lead"]):
    def by_id(self, business: Business, lead_id: str) -> Lead | None:
        """The lead by its id or by one of its aliases."""
        lead = self.filter(business=business, lead_id=lead_id).first()
        if lead is None:
            lead = self.filter(business=business, aliases__alias=lead_id).first()
        return lead

    def by_customer(self, business: Business, ids: CustomerIds) -> Lead | None:
        """The lead of a customer: by BSUID first (Meta's identity), else by number."""
        if ids.user_id:
            lead = self.filter(business=business, user_id=ids.user_id).first()
            if lead is not None:
                return lead
        if ids.wa_id:
            return self.filter(business=business, wa_id=ids.wa_id).order_by("pk").first()
        return None

    def identify(self, business: Business, ids: CustomerIds, *, received_at: datetime | None = None) -> Resolution:
        """The customer's lead, found or made, with what this message taught us of them.

        Call inside a transaction: advisory locks on the identifiers serialise two deliveries
        for one new customer until it commits. A BSUID and a number that each already name a
        different lead are not merged (two histories, two sets of orders): the BSUID's lead is
        used and the clash is written on it as an activity."""
        lock_identifiers(business, ids)
        by_user = self.filter(business=business, user_id=ids.user_id).first() if ids.user_id else None
        by_phone = self.filter(business=business, wa_id=ids.wa_id).order_by("pk").first() if ids.wa_id else None
        lead = by_user or by_phone
        if lead is None:
            made: Lead = self.create(
                business=business,
                lead_id=new_lead_id(),
                wa_id=ids.wa_id,
                user_id=ids.user_id,
                parent_user_id=ids.parent_user_id,
                username=ids.username,
                customer_name=ids.name,
                last_inbound_at=received_at,
            )
            return Resolution(lead=made, created=True)
        resolution = Resolution(lead=lead)
        changed: list[str] = []
        if ids.user_id and not lead.user_id:
            lead.user_id = ids.user_id
            resolution.joined.append("user_id")
        if ids.wa_id and by_phone is None and lead.wa_id != ids.wa_id:
            # Known by BSUID: the number is new to us (shared at last, or changed).
            if lead.wa_id:
                changed.append("wa_id")
            else:
                resolution.joined.append("wa_id")
            lead.wa_id = ids.wa_id
        for name, value in (
            ("parent_user_id", ids.parent_user_id),
            ("username", ids.username),
            ("customer_name", ids.name),
        ):
            if value and getattr(lead, name) != value:
                setattr(lead, name, value)
                changed.append(name)
        if resolution.joined or changed:
            lead.save(update_fields=[*resolution.joined, *changed, "updated_at"])
        if resolution.joined:
            LeadActivity.objects.create(
                lead=lead, kind="identity_joined", detail={"added": resolution.joined, "source": "message"}
            )
        if by_user is not None and by_phone is not None and by_user.pk != by_phone.pk:
            LeadActivity.objects.create(
                lead=lead, kind="identity_conflict", detail={"number_is_on_lead": by_phone.lead_id}
            )
        return resolution

    def change_identifiers(
        self, business: Business, ids: CustomerIds, *, new_wa_id: str = "", new_user_id: str = "", source: str
    ) -> Lead | None:
        """A customer changed number or BSUID (Meta's system messages and user_id_update): the
        lead keeps its history and answers to the new identifier from now on."""
        lock_identifiers(business, ids)
        lead = self.by_customer(business, ids)
        if lead is None:
            return None
        changed = []
        if new_wa_id and new_wa_id != lead.wa_id:
            lead.wa_id = new_wa_id
            changed.append("wa_id")
        if new_user_id and new_user_id != lead.user_id:
            if self.filter(business=business, user_id=new_user_id).exclude(pk=lead.pk).exists():
                LeadActivity.objects.create(lead=lead, kind="identity_conflict", detail={"source": source})
                return lead
            lead.user_id = new_user_id
            changed.append("user_id")
        if changed:
            lead.save(update_fields=[*changed, "updated_at"])
            LeadActivity.objects.create(
                lead=lead, kind="identity_changed", detail={"changed": changed, "source": source}
            )
        return lead

    def upsert(self, *, business: Business, lead_id: str, ids: CustomerIds, received_at: datetime) -> Lead:
        """The lead of an analysed message, brought up to date and locked until the
        transaction ends: its latest inbound time only moves forward (messages arrive in any
        order), a name or username is kept until a new one is given.

        One UPDATE ... FROM (the lead by its id or an alias) RETURNING for every message the
        webhook stored; a lead no id names (the AI service's own intake) is found by the
        customer's identifiers or made, and the event's id becomes its alias."""
        params = {
            "business": business.pk,
            "lead_id": lead_id,
            "name": ids.name,
            "username": ids.username,
            "received": received_at,
            "now": timezone.now(),
        }
        found = list(self.raw(UPSERT_SQL, params))
        if found:
            return found[0]
        resolution = self.identify(business, ids, received_at=received_at)
        if resolution.lead.lead_id != lead_id:
            LeadAlias.objects.get_or_create(business=business, alias=lead_id, defaults={"lead": resolution.lead})
        return next(iter(self.raw(UPSERT_SQL, {**params, "lead_id": resolution.lead.lead_id})))


class Lead(models.Model):
    """A customer conversation with one business."""

    class State(models.TextChoices):
        NEW = "NEW"
        CONTACTED = "CONTACTED"
        QUALIFIED = "QUALIFIED"
        CONVERTED = "CONVERTED"
        LOST = "LOST"

    # Opaque ("ld." and 20 hex digits): it reaches logs, task lists, Kafka keys and the sales
    # webhook, so it must say nothing of the customer. Ids a lead had before (the phone-number
    # ids of older versions, an upstream's own) are its aliases (LeadAlias).
    lead_id = models.CharField(max_length=64)
    business = models.ForeignKey(Business, on_delete=models.PROTECT, related_name="leads")
    # Meta names a customer by a business-scoped user id (BSUID) and, unless they adopted a
    # username, by their number: either may be missing, never both.
    wa_id = models.CharField("customer WhatsApp number", max_length=15, blank=True)
    user_id = models.CharField("business-scoped user id (BSUID)", max_length=140, blank=True)
    parent_user_id = models.CharField("parent BSUID", max_length=140, blank=True)
    # For display only: a customer can change it at will.
    username = models.CharField(max_length=64, blank=True)
    customer_name = models.CharField(max_length=256, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.NEW, db_index=True)
    needs_review = models.BooleanField(default=False, db_index=True)
    # Meta's user_preferences webhook: the customer stopped marketing messages (and when);
    # None while they accept them.
    marketing_stopped_at = models.DateTimeField(null=True, blank=True)
    # The customer opted out of automatic messages (a STOP keyword, the admin): no reply and no
    # template goes to them until they opt back in (None). The source says who asked.
    opted_out_at = models.DateTimeField(null=True, blank=True)
    opt_out_source = models.CharField(max_length=32, blank=True, default="", db_default="")
    last_inbound_at = models.DateTimeField(null=True, blank=True)
    # An agent answering this customer by hand (the inbox app): until taken_over_until passes
    # or they hand back, the pipeline runs the actions but sends no automatic reply
    # (whatsapp.send.reply, SKIPPED_AGENT). Here, not in inbox/, so the pipeline reads it
    # without importing the app above it. Written only by take_over and hand_back.
    taken_over_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    taken_over_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = LeadQuerySet.as_manager()

    class Meta:
        ordering = ["-updated_at"]
        # Erasing a customer's personal data (whatsapp.ops.erasure) is its own right.
        # So is changing a customer's opt-out by hand (leads.admin): an audited activity names who.
        permissions = [
            ("erase_customer", "Can erase a customer's personal data"),
            ("change_opt_out", "Can opt a customer out of automatic messages, or back in"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["business", "lead_id"], name="lead_unique_per_business"),
            models.UniqueConstraint(
                fields=["business", "user_id"], condition=~models.Q(user_id=""), name="lead_unique_bsuid"
            ),
        ]
        indexes = [
            models.Index(fields=["business", "wa_id"], name="lead_wa_id"),
            # The agent inbox's list of conversations, newest activity first (inbox.conversations).
            models.Index(fields=["updated_at"], name="lead_updated"),
        ]

    def __str__(self) -> str:
        return self.lead_id

    @property
    def address(self) -> str:
        """Where a reply goes: the number when we know it (Meta's advice, and the only
        address some templates take), else the BSUID."""
        return self.wa_id or self.user_id

    @property
    def display_name(self) -> str:
        return self.customer_name or (f"@{self.username}" if self.username else self.lead_id)

    def opt_out(self, *, source: str, by: str = "", processing_id: str = "") -> bool:
        """Stop every automatic message to this customer (whatsapp.send.reply skips them as
        SKIPPED_OPTED_OUT), with an `opted_out` activity naming the source and who (an admin
        user; empty for the customer's own keyword). False, and nothing written, when already out.

        One conditional UPDATE: two callers at once (a keyword and an admin) record it once."""
        now = timezone.now()
        with transaction.atomic():
            changed = Lead.objects.filter(pk=self.pk, opted_out_at__isnull=True).update(
                opted_out_at=now, opt_out_source=source[:32], updated_at=now
            )
            if not changed:
                self.refresh_from_db(fields=["opted_out_at", "opt_out_source"])
                return False
            LeadActivity.objects.create(
                lead=self, kind="opted_out", processing_id=processing_id, detail={"source": source, "by": by}
            )
        self.opted_out_at, self.opt_out_source = now, source[:32]
        return True

    def opt_in(self, *, source: str, by: str = "", processing_id: str = "") -> bool:
        """Automatic messages to this customer again, with an `opted_in` activity; False, and
        nothing written, when they were not opted out."""
        now = timezone.now()
        with transaction.atomic():
            changed = Lead.objects.filter(pk=self.pk, opted_out_at__isnull=False).update(
                opted_out_at=None, opt_out_source="", updated_at=now
            )
            if not changed:
                self.refresh_from_db(fields=["opted_out_at", "opt_out_source"])
                return False
            LeadActivity.objects.create(
                lead=self, kind="opted_in", processing_id=processing_id, detail={"source": source, "by": by}
            )
        self.opted_out_at, self.opt_out_source = None, ""
        return True

    def stop_marketing(self, *, source: str, at: datetime | None = None, processing_id: str = "") -> bool:
        """The customer stopped marketing messages (Meta's 131050 answer, as its user_preferences
        webhook says): MARKETING templates are no longer sent to them (whatsapp.send.template).
        A `marketing_stopped` activity; False, and nothing written, when already stopped."""
        when = at or timezone.now()
        with transaction.atomic():
            changed = Lead.objects.filter(pk=self.pk, marketing_stopped_at__isnull=True).update(
                marketing_stopped_at=when, updated_at=timezone.now()
            )
            if not changed:
                return False
            LeadActivity.objects.create(
                lead=self, kind="marketing_stopped", processing_id=processing_id, detail={"source": source}
            )
        self.marketing_stopped_at = when
        return True

    def is_taken_over(self, now: datetime | None = None) -> bool:
        """An agent holds the conversation: the bot stays quiet. A hold whose time has passed
        is over without anyone writing it (nobody has to sweep it)."""
        now = now or timezone.now()
        return self.taken_over_by_id is not None and self.taken_over_until is not None and self.taken_over_until > now

    def take_over(self, user: Any, hours: float) -> bool:
        """`user` holds the conversation for `hours` from now: True when they do (also when
        they held it already: the hold is renewed), False when another agent holds it (this
        object then says who, and until when).

        One conditional UPDATE decides, so two agents clicking at once end with exactly one
        holder: Postgres locks the row for the first UPDATE, and the second re-checks the
        condition on the row as the first left it. A `taken_over` activity names who."""
        now = timezone.now()
        until = now + timedelta(hours=hours)
        free = models.Q(taken_over_by__isnull=True) | models.Q(taken_over_until__lte=now) | models.Q(taken_over_by=user)
        with transaction.atomic():
            held = Lead.objects.filter(free, pk=self.pk).update(
                taken_over_by=user, taken_over_until=until, updated_at=now
            )
            if held:
                LeadActivity.objects.create(
                    lead=self,
                    kind="taken_over",
                    detail={"by": user.get_username(), "until": until.isoformat(), "hours": hours},
                )
        self.refresh_from_db(fields=["taken_over_by", "taken_over_until", "updated_at"])
        return bool(held)

    def hand_back(self, user: Any) -> bool:
        """The bot answers again: True when `user` held the conversation (a `handed_back`
        activity names them), False, and nothing written, when they did not (another agent
        holds it, or nobody does)."""
        now = timezone.now()
        with transaction.atomic():
            released = Lead.objects.filter(pk=self.pk, taken_over_by=user).update(
                taken_over_by=None, taken_over_until=None, updated_at=now
            )
            if released:
                LeadActivity.objects.create(lead=self, kind="handed_back", detail={"by": user.get_username()})
        self.refresh_from_db(fields=["taken_over_by", "taken_over_until", "updated_at"])
        return bool(released)


class LeadAlias(models.Model):
    """An id a lead was known by before: records already in flight (a Kafka record, a dead
    letter) name it and still find their lead."""

    business = models.ForeignKey(Business, on_delete=models.CASCADE, related_name="lead_aliases")
    alias = models.CharField(max_length=64)
    lead = models.ForeignKey(Lead, on_delete=models.CASCADE, related_name="aliases")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["business", "alias"], name="lead_alias_unique")]
        verbose_name_plural = "lead aliases"

    def __str__(self) -> str:
        return f"{self.alias} -> {self.lead_id}"


class ImmutableRecord(ValidationError):
    pass


class LeadActivity(models.Model):
    """The lead's history. Append-only: a trigger in the database refuses
    UPDATE and DELETE, so not even raw SQL or a bug can rewrite it."""

    lead = models.ForeignKey(Lead, on_delete=models.PROTECT, related_name="activities")
    kind = models.CharField(max_length=40, db_index=True)
    processing_id = models.CharField(max_length=128, blank=True, db_index=True)
    from_state = models.CharField(max_length=16, blank=True)
    to_state = models.CharField(max_length=16, blank=True)
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name_plural = "lead activities"

    def __str__(self) -> str:
        return f"{self.kind} on {self.lead_id}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None and not kwargs.get("force_insert"):
            raise ImmutableRecord("lead activities are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise ImmutableRecord("lead activities are append-only")


class Erasure(models.Model):
    """One erasure of a customer's personal data (whatsapp.ops.erasure): who, when, and what
    it changed per table. Also the database's licence for the one rewrite of the activity log
    it allows: the trigger (leads/migrations/0012) lets an UPDATE of an activity's `detail`
    through only inside the transaction that set `leads.erasure` to this row's id, and only
    for activities of this row's lead."""

    business = models.ForeignKey(Business, on_delete=models.PROTECT, related_name="erasures")
    lead = models.ForeignKey(Lead, on_delete=models.PROTECT, related_name="erasures")
    erased_by = models.CharField(max_length=150)
    erased_at = models.DateTimeField(default=timezone.now)
    changed = models.JSONField(default=dict, blank=True, help_text="Rows changed, per table.")

    class Meta:
        ordering = ["-erased_at", "-id"]

    def __str__(self) -> str:
        return f"erasure of {self.lead_id} by {self.erased_by}"
