#!/bin/sh
# Collect static files into $1 at image build time. The settings refuse to load without a
# secret key when DATABASE_URL names a database, so both get throwaway values that exist only
# for this command: nothing connects to that database, and the key never reaches the image.
set -eu
target=${1:?usage: collectstatic.sh TARGET_DIR}
AIOPS_SECRET_KEY="collectstatic-build-only-$(date +%s)" \
DATABASE_URL="postgres://build@127.0.0.1:1/build" \
REDIS_URL="redis://127.0.0.1:1/0" \
AIOPS_STATIC_ROOT="$target" \
AIOPS_RUN_DIR="${TMPDIR:-/tmp}/aiops-build" \
AIOPS_LOG_FORMAT=json \
  python manage.py collectstatic --no-input -v 0
test -d "$target/admin"  # fail the build when nothing was collected
