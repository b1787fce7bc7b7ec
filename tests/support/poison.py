"""A record that fails inside intake, past the contract: a Postgres trigger refuses the
inbox row of one processing_id, as a constraint, a storage limit or a bug would."""

from __future__ import annotations

from django.db import connection

POISON = "poison-1"


def add_poison_trigger() -> None:
    """Refuse POISON's inbox row inside the real insert of whichever process takes it in."""
    with connection.cursor() as cursor:
        cursor.execute(f"""
            CREATE OR REPLACE FUNCTION test_poison_row() RETURNS trigger AS $$
            BEGIN
                RAISE EXCEPTION 'test trigger refuses this row';
            END $$ LANGUAGE plpgsql;
            CREATE TRIGGER test_poison_row BEFORE INSERT ON whatsapp_processedmessage
                FOR EACH ROW WHEN (NEW.processing_id = '{POISON}') EXECUTE FUNCTION test_poison_row();
        """)


def remove_poison_trigger() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "DROP TRIGGER IF EXISTS test_poison_row ON whatsapp_processedmessage;"
            "DROP FUNCTION IF EXISTS test_poison_row();"
        )
