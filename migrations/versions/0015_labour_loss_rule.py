"""The default monitoring rule for a sudden loss of labour.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07

``household-records`` now counts each record's members able to work (from the member records valid on the record's
first day, ``person`` and ``person_history``) and those of the previous record, so the third kind of sudden
difficulty the national policy names — a loss of labour, beside a loss of income and rigid expenditure — is a rule
like the others (docs/methodology.md#monitoring).
"""

from __future__ import annotations

from alembic import op

from app.db import execute_sql_script

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

SOURCE = ("State Council Leading Group Office of Poverty Alleviation and Development, Guiding Opinions on "
          "Establishing a Monitoring and Assistance Mechanism to Prevent Return to Poverty (国开发〔2020〕6号), 2020 "
          "(a sudden severe difficulty from illness, disaster or accident, including the loss of labour; any loss "
          "of a member able to work is this service's default)")


def upgrade() -> None:
    execute_sql_script(
        op.get_bind(),
        f"""
        INSERT INTO monitoring_rule (rule_id, category, title, title_zh, expression, report, source) VALUES
        ('labour-loss', 'sudden_difficulty', 'Fewer members able to work than at the previous record',
         '家庭劳动力比上年减少',
         'status IN (''exited'', ''monitored'') AND labour_members < previous_labour_members',
         ARRAY['labour_members', 'previous_labour_members']::text[],
         '{SOURCE.replace("'", "''")}');
        -- each record counts its members valid on a day: covering indexes answer that from the index alone
        -- (screening 1,000,000 household-years with the rule: 62 s without them, 53 s with them; bench/monitoring.py)
        CREATE INDEX person_hh_valid ON person (hh_id, valid_from) INCLUDE (valid_to, labour);
        CREATE INDEX person_history_hh_valid ON person_history (hh_id, valid_from) INCLUDE (valid_to, labour);
        """,
    )


def downgrade() -> None:
    execute_sql_script(op.get_bind(), """
        DROP INDEX IF EXISTS person_history_hh_valid;
        DROP INDEX IF EXISTS person_hh_valid;
        DELETE FROM monitoring_rule WHERE region_id IS NULL AND rule_id = 'labour-loss';
        """)
