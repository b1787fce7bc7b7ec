"""Make lead activities append-only in the database itself, so raw SQL, a
shell session or a future bug cannot rewrite a lead's history."""
from django.db import migrations

FORWARD = """
CREATE OR REPLACE FUNCTION leads_activity_refuse_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'leads_leadactivity is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER leads_activity_append_only
    BEFORE UPDATE OR DELETE ON leads_leadactivity
    FOR EACH ROW EXECUTE FUNCTION leads_activity_refuse_change();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS leads_activity_append_only ON leads_leadactivity;
DROP FUNCTION IF EXISTS leads_activity_refuse_change();
"""


class Migration(migrations.Migration):
    dependencies = [("leads", "0001_initial")]
    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
