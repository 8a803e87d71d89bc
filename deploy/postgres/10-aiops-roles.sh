#!/bin/sh
# The agent's two PostgreSQL roles (README, "PostgreSQL roles"), for the postgres image's
# /docker-entrypoint-initdb.d (it runs this once, on an empty data directory, as the superuser).
# On an existing database run it by hand, with the same variables:
#   docker-compose exec -e AIOPS_DB_OWNER_PASSWORD -e AIOPS_DB_APP_PASSWORD postgres \
#     sh /docker-entrypoint-initdb.d/10-aiops-roles.sh
# then `docker-compose run --rm migrate` (it grants the app role its rows after migrating).
#   aiops_owner  owns the database and the schema; runs the migrations (the migrate service)
#   aiops_app    web, worker, beat, Flower: rows only -- no DDL, no TRUNCATE, audit log insert-only
set -eu
: "${AIOPS_DB_OWNER_PASSWORD:?set AIOPS_DB_OWNER_PASSWORD}" "${AIOPS_DB_APP_PASSWORD:?set AIOPS_DB_APP_PASSWORD}"
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres \
  -v owner_password="$AIOPS_DB_OWNER_PASSWORD" -v app_password="$AIOPS_DB_APP_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE aiops_owner LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %L', :'owner_password')
  WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'aiops_owner') \gexec
SELECT format('CREATE ROLE aiops_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %L', :'app_password')
  WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'aiops_app') \gexec
SELECT 'CREATE DATABASE aiops OWNER aiops_owner'
  WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'aiops') \gexec
ALTER DATABASE aiops OWNER TO aiops_owner;
SQL
