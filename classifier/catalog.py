"""A business's catalog for the classifier, cached per process.

Business.updated_at is bumped by every save of the business or of one of its products (see
leads.models), so one indexed read of it tells whether the cached catalog is still current; a product saved
outside the admin does not bump it, so a cached catalog is also read again after
CATALOG_MAX_AGE_SECONDS.
A business nobody knows here gets an empty catalog: ingest dead-letters its results anyway, and
classifying it still shows what the AI would have said.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

from classifier.backends.base import Catalog, CatalogProduct
from leads.models import Business

SAMPLE_CATALOG = Path(__file__).resolve().parent / "data" / "catalog.json"

CATALOG_MAX_AGE_SECONDS = 60.0

_cache: dict[str, tuple[datetime, float, Catalog]] = {}


def catalog_for(business_id: str) -> Catalog:
    """Raises the database's errors: the caller treats them as an outage."""
    row = Business.objects.filter(business_id=business_id).values("pk", "updated_at", "default_language").first()
    if row is None:
        _cache.pop(business_id, None)
        return Catalog(business_id=business_id)
    cached = _cache.get(business_id)
    if cached is not None and cached[0] == row["updated_at"] and time.monotonic() - cached[1] < CATALOG_MAX_AGE_SECONDS:
        return cached[2]
    products = tuple(
        CatalogProduct(sku=sku, name=name)
        for sku, name in Business.objects.get(pk=row["pk"]).products.values_list("sku", "name")
    )
    catalog = Catalog(business_id=business_id, products=products, default_language=row["default_language"] or "en")
    _cache[business_id] = (row["updated_at"], time.monotonic(), catalog)
    return catalog


def sample_catalog(path: Path = SAMPLE_CATALOG) -> Catalog:
    """The shipped sample catalog (evaluation and the demo business)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    products = tuple(CatalogProduct(sku=p["sku"], name=p["name"]) for p in data["products"])
    return Catalog(business_id=data["business_id"], products=products)


def install_sample_catalog(business: Business, path: Path = SAMPLE_CATALOG) -> int:
    """Give a business the sample catalog's products (the demo's), keeping rows it already has by
    SKU up to date; returns how many products the catalog holds. The save of the business bumps
    its updated_at, which is what tells every process's cached catalog to read it again."""
    from leads.models import Product

    data = json.loads(path.read_text(encoding="utf-8"))
    for item in data["products"]:
        Product.objects.update_or_create(
            business=business,
            sku=item["sku"],
            defaults={
                "name": item["name"],
                "price": item["price"],
                "currency": item.get("currency", "USD"),
                "stock": item.get("stock", 0),
            },
        )
    business.save(update_fields=["updated_at"])
    return len(data["products"])


def forget() -> None:
    _cache.clear()
