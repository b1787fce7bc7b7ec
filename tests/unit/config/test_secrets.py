"""No secret of a sales webhook URL in the admin's business pages or in log lines:
the form refuses credentials and plain http, the page shows only the webhook's
origin and keeps the URL on save, and redaction keeps only each URL's origin.
(A message the whole way through a real worker: tests/integration/test_secrets.py.)"""

from __future__ import annotations

import json
import logging

import pytest
from django.core.exceptions import ValidationError

from leads.models import Business

PASSWORD, PATH_TOKEN, QUERY_TOKEN = "s3cret", "T0KEN", "QSECRET9"
WEBHOOK_SECRET = "whsec-never-shown-8c1d"
ACCESS_TOKEN = "EAAG-secrets-test-token-77"
SECRETS = (PASSWORD, PATH_TOKEN, QUERY_TOKEN, WEBHOOK_SECRET, ACCESS_TOKEN)


# --- The admin refuses what would leak ------------------------------------------------------------


@pytest.mark.django_db
def test_the_business_form_refuses_credentials_plain_http_and_a_phone_number_id_that_is_not_digits(settings):
    settings.SALES_WEBHOOK_ALLOW_HTTP = False
    settings.SALES_WEBHOOK_ALLOWED_HOSTS = []
    business = Business(
        business_id="b-1",
        tenant_id="t-1",
        display_name="B",
        sales_webhook_url=f"https://user:{PASSWORD}@crm.example.com/hook",
        phone_number_id="12ab",
    )
    with pytest.raises(ValidationError) as caught:
        business.full_clean()
    errors = caught.value.message_dict
    assert "credentials" in errors["sales_webhook_url"][0] and PASSWORD not in str(errors)
    assert errors["phone_number_id"] == ["A WhatsApp phone-number id is digits only."]
    business.sales_webhook_url, business.phone_number_id = "http://crm.example.com/hook", "106540352242922"
    with pytest.raises(ValidationError, match="must be https"):
        business.full_clean()
    business.sales_webhook_url = f"https://crm.example.com/hooks/{PATH_TOKEN}?api_key={QUERY_TOKEN}"
    business.full_clean()  # a token in the path or query is the receiver's business


@pytest.mark.django_db
def test_the_business_page_shows_only_the_webhook_origin_and_keeps_it_on_save(client, django_user_model, settings):
    settings.SALES_WEBHOOK_ALLOWED_HOSTS = []
    url = f"https://crm.example.com/hooks/{PATH_TOKEN}?api_key={QUERY_TOKEN}"
    business = Business.objects.create(business_id="b-1", tenant_id="t-1", display_name="B", sales_webhook_url=url)
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.com", "pw"))
    page = client.get(f"/admin/leads/business/{business.pk}/change/").content.decode()
    assert "https://crm.example.com:443" in page and PATH_TOKEN not in page and QUERY_TOKEN not in page
    form = {
        "business_id": "b-1",
        "tenant_id": "t-1",
        "display_name": "B",
        "is_active": "on",
        "replies_enabled": "on",
        "default_language": "en",
        "confidence_thresholds": "{}",
        "phone_number_id": "",
        "sales_webhook_url": "",
        "products-TOTAL_FORMS": "0",
        "products-INITIAL_FORMS": "0",
    }
    assert client.post(f"/admin/leads/business/{business.pk}/change/", form).status_code == 302
    business.refresh_from_db()
    assert business.sales_webhook_url == url, "an empty field keeps the URL"
    refused = client.post(
        f"/admin/leads/business/{business.pk}/change/",
        {**form, "sales_webhook_url": f"https://ops:{PASSWORD}@crm.example.com/hook"},
    )
    assert refused.status_code == 200 and "must not carry credentials" in refused.content.decode()
    assert PASSWORD not in refused.content.decode()
    client.post(f"/admin/leads/business/{business.pk}/change/", {**form, "clear_sales_webhook_url": "on"})
    business.refresh_from_db()
    assert business.sales_webhook_url == ""


# --- The redaction helper and the log filter --------------------------------------------------------


def test_redaction_keeps_only_each_urls_origin_and_replaces_known_secrets():
    from config.redaction import origin, redact

    url = f"https://user:{PASSWORD}@crm.example.com/path/{PATH_TOKEN}?api_key={QUERY_TOKEN}#frag"
    assert origin(url) == "https://crm.example.com:443"
    assert origin("http://[::1]:8080/x") == "http://[::1]:8080"
    text = (
        f"POST to {url} failed: HTTPSConnectionPool(host='crm.example.com', port=443): Max retries exceeded "
        f"with url: /path/{PATH_TOKEN}?api_key={QUERY_TOKEN} (token {ACCESS_TOKEN})"
    )
    cleaned = redact(text, [ACCESS_TOKEN])
    assert "https://crm.example.com:443" in cleaned and "with url: /[redacted]" in cleaned
    assert not [s for s in SECRETS if s in cleaned]
    assert redact("no secret here") == "no secret here"


def test_log_lines_lose_urls_secrets_at_every_level(settings):
    import io

    from config.logging import (
        ContextFilter,
        JsonFormatter,
        RedactFilter,
        logging_config,
    )

    settings.WHATSAPP_ACCESS_TOKEN = ACCESS_TOKEN
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter(service="worker"))
    handler.addFilter(RedactFilter())
    logger = logging.Logger("test.redact", level=logging.DEBUG)
    logger.addHandler(handler)
    url = f"https://user:{PASSWORD}@crm.example.com/path/{PATH_TOKEN}?api_key={QUERY_TOKEN}"
    logger.debug("calling %s with %s", url, ACCESS_TOKEN)
    try:
        raise ConnectionError(f"could not reach {url}")
    except ConnectionError:
        logger.exception("failed")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["message"] == "calling https://crm.example.com:443 with [redacted]"
    assert "ConnectionError: could not reach https://crm.example.com:443" in lines[1]["exc_info"]
    assert not [s for s in SECRETS if s in stream.getvalue()]
    # urllib3 quotes whole request lines at DEBUG: it is kept at WARNING whatever LOG_LEVEL says.
    config = logging_config(level="DEBUG", log_format="json", service="worker")
    assert config["loggers"]["urllib3"]["level"] == "WARNING"
    assert "redact" in config["handlers"]["console"]["filters"]


def test_the_webhook_app_secret_and_verify_token_are_known_secrets(settings):
    """Whatever logs them by mistake (an exception quoting a setting, say) is redacted."""
    from config.redaction import configured_secrets, redact

    settings.WHATSAPP_APP_SECRET = "meta-app-secret-3b9f0c"
    settings.WHATSAPP_VERIFY_TOKEN = "verify-token-8e1d2a"
    assert {"meta-app-secret-3b9f0c", "verify-token-8e1d2a"} <= set(configured_secrets())
    line = redact("secret meta-app-secret-3b9f0c, token verify-token-8e1d2a", configured_secrets())
    assert line == "secret [redacted], token [redacted]"
