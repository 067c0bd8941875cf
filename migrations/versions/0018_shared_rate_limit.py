"""More than one machine: rate limits shared by every worker, and jobs of a lost worker run again.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07

One row per client (an API key's public id, or an address without a key) holding the *theoretical arrival time*
of the generic cell rate algorithm (GCRA, ITU-T I.371): a single number per client that every API worker updates in
one statement, so N workers behind a load balancer allow a key its limit once, not N times. ``UNLOGGED``: the
rows are a few seconds of state, not worth the write-ahead log (after a crash the table is empty, which is every
client's full allowance), and they are not copied to streaming replicas, which never answer for them.

``analysis_run.attempts``: how many times a job was started. A job whose worker died (killed, machine lost) is
queued again while it has attempts left (``TPA_PROCESSES_ATTEMPTS``), so another worker runs it.
"""

from __future__ import annotations

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE UNLOGGED TABLE rate_bucket (
          client text PRIMARY KEY,
          tat    double precision NOT NULL,  -- theoretical arrival time, seconds since the epoch (database clock)
          seen   double precision NOT NULL,  -- when the last request was counted (same clock)
          ok     boolean NOT NULL            -- whether that request passed
        )""")
    op.execute("COMMENT ON TABLE rate_bucket IS 'Per-client rate limit state shared by all API workers (GCRA)'")
    op.execute("ALTER TABLE analysis_run ADD COLUMN attempts smallint NOT NULL DEFAULT 0 CHECK (attempts >= 0)")


def downgrade() -> None:
    op.execute("ALTER TABLE analysis_run DROP COLUMN attempts")
    op.execute("DROP TABLE rate_bucket")
