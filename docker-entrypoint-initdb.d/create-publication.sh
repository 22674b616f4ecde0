#!/usr/bin/env bash
# Creates the publication walstream streams from (see docker-compose.yml: `start --publication publication`).
#
# The postgres image runs this once, when it initialises an empty data directory, as its superuser
# POSTGRES_USER against POSTGRES_DB. FOR ALL TABLES also covers tables created later. Running it again is
# harmless: an existing publication is left as it is.
# The same options as the image's entrypoint: it sources (rather than runs) this file if a checkout lost
# the executable bit, and must not inherit stricter ones.
set -Eeo pipefail

# The image's own defaults, so the script also runs by hand with only PG* variables set.
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'EOSQL'
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = 'publication') THEN
        CREATE PUBLICATION publication FOR ALL TABLES;
    ELSE
        RAISE NOTICE 'publication "publication" already exists, leaving it as it is';
    END IF;
END
$$;
EOSQL
