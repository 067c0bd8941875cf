#!/bin/sh
# /docker-entrypoint-initdb.d of the primary (docker-compose.yml): let the replica container copy and follow this
# server over the network (pg_basebackup, streaming replication), with the same password as every connection.
echo "host replication all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
