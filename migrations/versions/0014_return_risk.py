"""Early warning of return to poverty: the trained models, their household predictions and village figures.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07

``risk_model`` keeps every model trained for a region (docs/methodology.md#return-risk): the years it learned from,
the year it scored, its features, parameters, validation metrics and library versions, and the model itself as
LightGBM's text dump (readable and loadable without unpickling anything).

``risk_prediction`` (restricted) holds each scored household's probability of being in poverty the next year and
the factors that raised it most. ``village_risk`` (public) holds the village figures of each region's latest model,
already suppressed: no figure for a village with fewer scored households than the minimum, and no count of
high-risk households that is below the minimum or leaves fewer than the minimum on the other side (the scored
households of a village are its exited and monitored ones, which other layers may publish).
"""

from __future__ import annotations

from alembic import op

from app.db import execute_sql_script

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_script(
        op.get_bind(),
        """
        CREATE TABLE risk_model (
          model_id        text PRIMARY KEY,
          region_id       text NOT NULL REFERENCES region (region_id) ON DELETE CASCADE,
          trained_from    integer NOT NULL,
          trained_until   integer NOT NULL CHECK (trained_until >= trained_from),
          scored_year     integer NOT NULL,
          trained_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
          owner           text,
          run_id          uuid,
          features        jsonb NOT NULL,
          params          jsonb NOT NULL,
          metrics         jsonb NOT NULL,
          libraries       jsonb NOT NULL,
          threshold       double precision NOT NULL CHECK (threshold > 0 AND threshold < 1),
          model           text NOT NULL
        );
        CREATE INDEX risk_model_region ON risk_model (region_id, trained_at DESC);

        CREATE TABLE risk_prediction (
          model_id      text NOT NULL REFERENCES risk_model (model_id) ON DELETE CASCADE,
          hh_id         text NOT NULL REFERENCES household (hh_id) ON DELETE CASCADE,
          region_id     text NOT NULL REFERENCES region (region_id) ON DELETE CASCADE,
          year          integer NOT NULL,
          village_code  text NOT NULL REFERENCES admin_unit (code) ON DELETE CASCADE,
          geom          geometry(Point, 4326),
          probability   double precision NOT NULL CHECK (probability >= 0 AND probability <= 1),
          high_risk     boolean NOT NULL,
          rules_fired   integer NOT NULL,
          factors       jsonb NOT NULL,
          PRIMARY KEY (model_id, hh_id)
        );
        CREATE INDEX risk_prediction_hh ON risk_prediction (hh_id);
        CREATE INDEX risk_prediction_geom ON risk_prediction USING gist (geom);

        CREATE TABLE village_risk (
          region_id       text NOT NULL REFERENCES region (region_id) ON DELETE CASCADE,
          village_code    text NOT NULL REFERENCES admin_unit (code) ON DELETE CASCADE,
          model_id        text NOT NULL REFERENCES risk_model (model_id) ON DELETE CASCADE,
          year            integer NOT NULL,
          high_risk       integer,
          mean_probability double precision,
          suppressed      boolean NOT NULL,
          PRIMARY KEY (region_id, village_code)
        );

        CREATE TRIGGER risk_model_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON risk_model
          FOR EACH STATEMENT EXECUTE FUNCTION tpa_bump_table_version();
        CREATE TRIGGER risk_prediction_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON risk_prediction
          FOR EACH STATEMENT EXECUTE FUNCTION tpa_bump_table_version();
        CREATE TRIGGER village_risk_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON village_risk
          FOR EACH STATEMENT EXECUTE FUNCTION tpa_bump_table_version();
        """,
    )


def downgrade() -> None:
    execute_sql_script(
        op.get_bind(),
        """
        DROP TABLE IF EXISTS village_risk;
        DROP TABLE IF EXISTS risk_prediction;
        DROP TABLE IF EXISTS risk_model;
        """,
    )
