#!/bin/sh
# The image's roles. Compose services and Kubernetes containers name one as their argument:
#   web | worker | outbound | beat | watch | flower | mcp | worker-with-mcp | migrate | help
# or any other command, run as given.
set -eu

# prometheus_client's multiprocess files of a previous run of this container are stale.
# (worker-with-mcp prepares the directory once for both of its processes.)
prepare_metrics_dir() {
  if [ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ] && [ -z "${AIOPS_METRICS_DIR_READY:-}" ]; then
    rm -rf "$PROMETHEUS_MULTIPROC_DIR"
    mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
  fi
}

# Every role imports Django's apps, and prometheus_client writes a file for a metric without
# labels as soon as it is defined: the directory must exist for migrate and beat too, not only
# for the roles that clear it (or their first import is a FileNotFoundError).
if [ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
  mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
fi

# /app in the image; the checkout's root when the tests run a role.
app_dir=$(cd "$(dirname "$0")/../.." && pwd)

role=${1:-web}
[ $# -gt 0 ] && shift

case "$role" in
  web)
    prepare_metrics_dir
    exec gunicorn aiops_site.wsgi --config "$app_dir/deploy/docker/gunicorn.conf.py" "$@"
    ;;
  worker)
    prepare_metrics_dir
    exec celery -A aiops_site worker -E --loglevel "${AIOPS_LOG_LEVEL:-INFO}" \
      --concurrency "${AIOPS_WORKER_CONCURRENCY:-2}" --hostname "worker@%h" "$@"
    ;;
  outbound)
    # Chat deliveries alone (their own queue, AIOPS_OUTBOUND_QUEUE), beside the worker: a delivery
    # never waits for a slot a poll or a playbook step holds.
    prepare_metrics_dir
    exec python -m aiops_site.outbound "$@"
    ;;
  beat)
    # Exactly one beat per deployment: two would fire every periodic task twice.
    exec celery -A aiops_site beat --loglevel "${AIOPS_LOG_LEVEL:-INFO}" \
      --scheduler django_celery_beat.schedulers:DatabaseScheduler --pidfile= "$@"
    ;;
  watch)
    # Kubernetes watch streams (any number of replicas: Redis leases give each cluster one owner).
    prepare_metrics_dir
    exec python manage.py watch "$@"
    ;;
  flower)
    if [ -z "${FLOWER_BASIC_AUTH:-}" ]; then
      echo "FLOWER_BASIC_AUTH is required (user:password): Flower's API can revoke and run tasks" >&2
      exit 2
    fi
    # Flower reads FLOWER_BASIC_AUTH from its environment: never on the command line, where
    # `ps` would show the password to every user of the machine.
    export FLOWER_BASIC_AUTH
    exec celery -A aiops_site flower --address=0.0.0.0 --port="${AIOPS_FLOWER_PORT:-5555}" "$@"
    ;;
  mcp)
    # The Kubernetes MCP server on loopback (it refuses any other address): the worker beside
    # it, in the same container (compose) or pod (Kubernetes), is its only client.
    prepare_metrics_dir
    if [ -z "${AIOPS_MCP_TOKEN:-}" ] && [ -n "${AIOPS_MCP_TOKEN_FILE:-}" ]; then
      AIOPS_MCP_TOKEN=$(cat "$AIOPS_MCP_TOKEN_FILE")
      export AIOPS_MCP_TOKEN
    fi
    if [ -z "${AIOPS_MCP_TOKEN:-}" ]; then
      echo "AIOPS_MCP_TOKEN (or AIOPS_MCP_TOKEN_FILE) is required: the MCP server holds write access" >&2
      exit 2
    fi
    set -- --http --host 127.0.0.1 --port "${AIOPS_MCP_PORT:-8765}" --django "$@"
    if [ "${AIOPS_MCP_METRICS_PORT:-0}" != "0" ]; then
      # A sidecar's metrics files are its own container's: serve them on a port of their own.
      exec python "$app_dir/deploy/docker/serve_with_metrics.py" --port "$AIOPS_MCP_METRICS_PORT" k8s.mcp_server -- "$@"
    fi
    exec python -m k8s.mcp_server "$@"
    ;;
  worker-with-mcp)
    # Compose: the worker, its outbound deliveries and its MCP server in one container, so the
    # server can stay on loopback. honcho stops all when one exits, and the restart policy brings
    # them back. The outbound process serves no port: the worker's serves its metrics files.
    prepare_metrics_dir
    export AIOPS_METRICS_DIR_READY=1
    exec honcho start --no-prefix --no-colour -e /dev/null -f "$app_dir/deploy/docker/Procfile.worker" -d "$app_dir"
    ;;
  migrate)
    # As the owner role when given (it then grants AIOPS_DB_APP_ROLE its rows); every other role
    # of this image connects with DATABASE_URL, the app role.
    if [ -n "${AIOPS_MIGRATE_DATABASE_URL:-}" ]; then
      DATABASE_URL="$AIOPS_MIGRATE_DATABASE_URL"
      export DATABASE_URL
    fi
    python manage.py migrate --no-input "$@"
    # Our MCP server's tools into the registry (from code): playbook steps and chat call tools by
    # their registered names, at AIOPS_MCP_URL (the worker's sidecar or its container's loopback).
    python manage.py mcp sync --builtin-only
    exec python "$app_dir/deploy/docker/register_cluster.py"
    ;;
  help|--help|-h)
    sed -n '2,3p' "$0"
    ;;
  *)
    exec "$role" "$@"
    ;;
esac
