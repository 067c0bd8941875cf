"""Road networks: versions of a region's roads, their edges and vertices (the routing topology), and cached
travel-time matrices.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07

``road_network`` keeps every network imported for a region (``version`` 1, 2, … per region; ``current`` marks the
latest), with the speeds per road class it was costed with, so a result names the network and the speeds it used.
``road_edge`` holds the edges between ``road_vertex`` ids (the topology pgRouting routes on): length, road class,
one-way (1 along the geometry, -1 against it, 0 both ways), surface and the speeds in km/h for motor traffic (null:
closed to it) and for walking (null: closed to pedestrians). Travel costs are length / speed, computed when routing.
``travel_time_cache`` keeps computed matrices per network, mode and point set (dropped with their network).

pgRouting is created when the server has it (``scripts/ensure-postgis.sh`` installs it with PostGIS); without it
the tables exist and routing answers that pgRouting is missing.
"""

from __future__ import annotations

from alembic import op

from app.db import execute_sql_script

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_script(
        op.get_bind(),
        """
        DO $$ BEGIN
          IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pgrouting') THEN
            CREATE EXTENSION IF NOT EXISTS pgrouting;
          END IF;
        END $$;

        CREATE TABLE road_network (
          network_id   integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
          region_id    text NOT NULL REFERENCES region (region_id) ON DELETE CASCADE,
          version      integer NOT NULL CHECK (version >= 1),
          current      boolean NOT NULL DEFAULT true,
          source       text NOT NULL,
          note         text,
          imported_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
          speeds       jsonb NOT NULL,
          edges        integer NOT NULL CHECK (edges >= 0),
          vertices     integer NOT NULL CHECK (vertices >= 0),
          length_km    double precision NOT NULL,
          components   integer NOT NULL,
          largest_component_share double precision NOT NULL,
          UNIQUE (region_id, version)
        );
        CREATE UNIQUE INDEX road_network_current ON road_network (region_id) WHERE current;

        CREATE TABLE road_vertex (
          network_id  integer NOT NULL REFERENCES road_network (network_id) ON DELETE CASCADE,
          vertex_id   bigint NOT NULL,
          component   integer NOT NULL,
          geom        geometry(Point, 4326) NOT NULL,
          PRIMARY KEY (network_id, vertex_id)
        );

        CREATE TABLE road_edge (
          network_id  integer NOT NULL REFERENCES road_network (network_id) ON DELETE CASCADE,
          edge_id     bigint NOT NULL,
          source      bigint NOT NULL,
          target      bigint NOT NULL,
          road_class  text NOT NULL,
          name        text,
          oneway      smallint NOT NULL DEFAULT 0 CHECK (oneway IN (-1, 0, 1)),
          surface     text,
          length_m    double precision NOT NULL CHECK (length_m >= 0),
          motor_kmh   double precision CHECK (motor_kmh > 0),
          walk_kmh    double precision CHECK (walk_kmh > 0),
          geom        geometry(LineString, 4326) NOT NULL,
          PRIMARY KEY (network_id, edge_id)
        );
        CREATE INDEX road_edge_geom ON road_edge USING gist (geom);
        CREATE INDEX road_edge_network ON road_edge (network_id);

        CREATE TABLE travel_time_cache (
          network_id  integer NOT NULL REFERENCES road_network (network_id) ON DELETE CASCADE,
          mode        text NOT NULL CHECK (mode IN ('motor', 'walk')),
          key         text NOT NULL,
          created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
          rows        integer NOT NULL,
          cols        integer NOT NULL,
          seconds     bytea NOT NULL,
          snaps       bytea NOT NULL,
          PRIMARY KEY (network_id, mode, key)
        );

        CREATE TRIGGER road_network_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON road_network
          FOR EACH STATEMENT EXECUTE FUNCTION tpa_bump_table_version();
        CREATE TRIGGER road_edge_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON road_edge
          FOR EACH STATEMENT EXECUTE FUNCTION tpa_bump_table_version();
        """,
    )


def downgrade() -> None:
    execute_sql_script(
        op.get_bind(),
        """
        DROP TABLE IF EXISTS travel_time_cache;
        DROP TABLE IF EXISTS road_edge;
        DROP TABLE IF EXISTS road_vertex;
        DROP TABLE IF EXISTS road_network;
        DROP EXTENSION IF EXISTS pgrouting;
        """,
    )
