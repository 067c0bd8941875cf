"""Dynamic monitoring against return to poverty: screening rules and the alerts they raise.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04

``monitoring_rule`` holds the rules, each a CQL2 text expression over the properties of the ``household-records``
collection (one registry record per household and year), in one of the three monitoring categories of the national
policy: households unstable after exit (``unstable_exited``), households at the edge of poverty (``edge``) and
households in sudden severe difficulty (``sudden_difficulty``). Rows with no region are the defaults; a region's
own row with the same ``rule_id`` replaces the default for that region (``active = false`` switches it off).

``alert`` holds what a screening found: one row per household and year, with the categories and rules that fired
and the values that triggered them. Its ``status`` moves only forward: new → verified → assisted → closed, or to
dismissed from new or verified (a trigger refuses any other change, as a 400 through the API).
"""

from __future__ import annotations

from alembic import op

from app.db import execute_sql_script

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# The default rules (docs/methodology.md#monitoring). The thresholds the national texts leave to provinces (the
# share of rigid expenditure, the size of an income loss) are this service's defaults, named as such there.
GUIDELINE_2020 = ("State Council Leading Group Office of Poverty Alleviation and Development, Guiding Opinions on "
                  "Establishing a Monitoring and Assistance Mechanism to Prevent Return to Poverty "
                  "(国开发〔2020〕6号), 2020")
GUIDELINE_2021 = ("National Rural Revitalization Administration et al., Guiding Opinions on Improving the Dynamic "
                  "Monitoring and Assistance Mechanism to Prevent Return to Poverty, 2021")
DEFAULT_RULES = (
    ("income-below-line-exited", "unstable_exited",
     "Exited household with income below the monitoring line", "脱贫户人均纯收入低于监测线",
     "status IN ('exited', 'monitored') AND year_exited IS NOT NULL AND net_income_pc < monitoring_line",
     ("net_income_pc", "monitoring_line"), f"{GUIDELINE_2020}; {GUIDELINE_2021}"),
    ("income-below-line-edge", "edge",
     "Household never registered poor with income below the monitoring line", "未脱贫过的农户人均纯收入低于监测线",
     "status = 'monitored' AND year_exited IS NULL AND net_income_pc < monitoring_line",
     ("net_income_pc", "monitoring_line"), f"{GUIDELINE_2020}; {GUIDELINE_2021}"),
    ("rigid-expenditure", "sudden_difficulty",
     "Rigid expenditure (illness, schooling, disaster) above half the household's net income",
     "因病因学因灾刚性支出超过家庭纯收入的一半",
     "status IN ('exited', 'monitored') AND rigid_expense_share > 0.5",
     ("rigid_expense_share", "expense_medical", "expense_education", "loss_disaster"),
     f"{GUIDELINE_2020} (rigid expenditure clearly exceeding income; the share 0.5 is this service's default)"),
    ("income-loss", "sudden_difficulty",
     "Net income per person fell by 30 % or more since the previous year", "人均纯收入比上年下降30%以上",
     "status IN ('exited', 'monitored') AND income_change <= -0.3",
     ("income_change", "net_income_pc", "previous_net_income_pc"),
     f"{GUIDELINE_2020} (a large loss of income; the 30 % is this service's default)"),
)


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def upgrade() -> None:
    rows = ",\n".join(
        f"({_quote(rid)}, {_quote(cat)}, {_quote(title)}, {_quote(zh)}, {_quote(expr)}, "
        f"ARRAY[{', '.join(_quote(r) for r in report)}]::text[], {_quote(src)})"
        for rid, cat, title, zh, expr, report, src in DEFAULT_RULES)
    execute_sql_script(
        op.get_bind(),
        f"""
        CREATE TABLE monitoring_rule (
          id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
          region_id   text REFERENCES region (region_id) ON DELETE CASCADE,
          rule_id     text NOT NULL CHECK (rule_id ~ '^[a-z0-9][a-z0-9_-]{{0,62}}$'),
          category    text NOT NULL CHECK (category IN ('unstable_exited', 'edge', 'sudden_difficulty')),
          title       text NOT NULL,
          title_zh    text,
          expression  text NOT NULL,
          report      text[] NOT NULL DEFAULT '{{}}',
          source      text NOT NULL,
          active      boolean NOT NULL DEFAULT true,
          CONSTRAINT monitoring_rule_once UNIQUE NULLS NOT DISTINCT (region_id, rule_id)
        );
        INSERT INTO monitoring_rule (rule_id, category, title, title_zh, expression, report, source) VALUES
        {rows};

        CREATE TABLE alert (
          alert_id        text PRIMARY KEY,
          region_id       text NOT NULL REFERENCES region (region_id) ON DELETE CASCADE,
          hh_id           text NOT NULL REFERENCES household (hh_id) ON DELETE CASCADE,
          year            integer NOT NULL,
          village_code    text NOT NULL REFERENCES admin_unit (code) ON DELETE CASCADE,
          geom            geometry(Point, 4326),
          categories      text[] NOT NULL CHECK (cardinality(categories) > 0),
          rules           text[] NOT NULL CHECK (cardinality(rules) > 0),
          trigger_values  jsonb NOT NULL,
          status          text NOT NULL DEFAULT 'new'
                          CHECK (status IN ('new', 'verified', 'assisted', 'closed', 'dismissed')),
          note            text,
          screened_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
          updated_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
          CONSTRAINT alert_once UNIQUE (hh_id, year)
        );
        CREATE INDEX alert_region_year ON alert (region_id, year);
        CREATE INDEX alert_geom ON alert USING gist (geom);

        CREATE FUNCTION alert_lifecycle() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.status IS DISTINCT FROM OLD.status AND NOT (
               (OLD.status = 'new' AND NEW.status IN ('verified', 'dismissed'))
            OR (OLD.status = 'verified' AND NEW.status IN ('assisted', 'dismissed'))
            OR (OLD.status = 'assisted' AND NEW.status = 'closed')) THEN
            RAISE EXCEPTION 'An alert moves new → verified → assisted → closed, or to dismissed from new or '
              'verified; % → % is not allowed.', OLD.status, NEW.status
              USING ERRCODE = 'check_violation', HINT = 'tpa-gis data rule', CONSTRAINT = 'alert_lifecycle';
          END IF;
          IF (NEW.hh_id, NEW.year, NEW.region_id) IS DISTINCT FROM (OLD.hh_id, OLD.year, OLD.region_id) THEN
            RAISE EXCEPTION 'An alert stays with its household and year.'
              USING ERRCODE = 'check_violation', HINT = 'tpa-gis data rule', CONSTRAINT = 'alert_lifecycle';
          END IF;
          NEW.updated_at := clock_timestamp();
          RETURN NEW;
        END $$;
        CREATE TRIGGER alert_lifecycle BEFORE UPDATE ON alert FOR EACH ROW EXECUTE FUNCTION alert_lifecycle();
        CREATE TRIGGER alert_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON alert
          FOR EACH STATEMENT EXECUTE FUNCTION tpa_bump_table_version();
        CREATE TRIGGER monitoring_rule_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON monitoring_rule
          FOR EACH STATEMENT EXECUTE FUNCTION tpa_bump_table_version();
        """,
    )


def downgrade() -> None:
    execute_sql_script(
        op.get_bind(),
        """
        DROP TABLE IF EXISTS alert;
        DROP FUNCTION IF EXISTS alert_lifecycle();
        DROP TABLE IF EXISTS monitoring_rule;
        """,
    )
