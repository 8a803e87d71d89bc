#!/usr/bin/env bash
# Build the image without Docker and run every role of it for real, then a playbook end to end.
#
#   deploy/verify-image.sh          build (cached), run every role, run a playbook; exit 0 only if all held
#   deploy/verify-image.sh build    build the base and the image only (cached), print the image name
#
# What it needs: root on Debian (it installs podman, buildah, debootstrap, runc and catatonit when missing),
# this checkout's Python environment (.venv, made with `make .venv/.run-deps` when missing;
# AIOPS_VERIFY_PYTHON=... for another),
# and a PostgreSQL and a Redis on the host: 127.0.0.1:5432 (a superuser, trust or a password in
# the URL) and 127.0.0.1:6379. It makes a database and takes an empty Redis database number of
# its own, and drops/flushes them when it ends, whatever happened.
#
# The base image is made from Debian's packages (Docker Hub is not needed): debootstrap minbase
# bookworm + python3, imported as localhost/bookworm-python:3.11, and reused when present. The
# image is the Dockerfile as it is, built with PYTHON_IMAGE set to that base; podman's layer cache
# makes a rebuild of unchanged sources take seconds. Containers run with --network host against
# the host's services.
#
# The last line on stdout is one JSON object:
#   {"roles_ok": [...], "roles_failed": [...], "playbook_resolved": true, "image_mb": N, "build_s": N}
#
# Settings (environment): AIOPS_VERIFY_PG_URL (default postgresql://postgres@127.0.0.1:5432/postgres),
# AIOPS_VERIFY_REDIS (127.0.0.1:6379), AIOPS_VERIFY_IMAGE (localhost/aiops-agent:verify),
# AIOPS_VERIFY_BASE_IMAGE (localhost/bookworm-python:3.11), AIOPS_VERIFY_REBUILD_BASE=1 (make the
# base again), AIOPS_VERIFY_CA_BUNDLE (/etc/ssl/certs/ca-certificates.crt: mounted into the build so
# pip trusts the package index the way this host does), DEBIAN_MIRROR (http://deb.debian.org/debian).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
IMAGE=${AIOPS_VERIFY_IMAGE:-localhost/aiops-agent:verify}
BASE_IMAGE=${AIOPS_VERIFY_BASE_IMAGE:-localhost/bookworm-python:3.11}
PG_URL=${AIOPS_VERIFY_PG_URL:-postgresql://postgres@127.0.0.1:5432/postgres}
REDIS_ADDR=${AIOPS_VERIFY_REDIS:-127.0.0.1:6379}
CA_BUNDLE=${AIOPS_VERIFY_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$ROOT/deploy/podman/containers.conf}
RUN_ID="v$$"
LABEL="aiops-verify=$RUN_ID"

log() { printf '%s verify-image: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 2; }

# --- tools ---------------------------------------------------------------------------------------

ensure_tools() {
  local missing=()
  command -v podman >/dev/null || missing+=(podman)
  command -v buildah >/dev/null || missing+=(buildah)
  command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
  command -v runc >/dev/null || [ -x /usr/sbin/runc ] || missing+=(runc)
  # The pause process of a pod's infra container (`podman kube play`, tests/deploy/test_kube_play.py).
  [ -x /usr/bin/catatonit ] || [ -x /usr/libexec/podman/catatonit ] || missing+=(catatonit)
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "missing ${missing[*]}; install them (apt-get install ${missing[*]}) or run this as root"
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them with"
  log "installing ${missing[*]} from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# --- build -----------------------------------------------------------------------------------------

build_base() {
  if [ -z "${AIOPS_VERIFY_REBUILD_BASE:-}" ] && podman image exists "$BASE_IMAGE"; then
    log "base $BASE_IMAGE is present: reused"
    return 0
  fi
  [ "$(id -u)" = 0 ] || die "debootstrap needs root to make the base image"
  local rootfs
  rootfs=$(mktemp -d /var/tmp/aiops-base.XXXXXX)
  log "making $BASE_IMAGE: debootstrap --variant=minbase bookworm from $DEBIAN_MIRROR (~1 min)"
  base_failed() {
    tail -20 "$rootfs.log" >&2
    rm -rf "$rootfs" "$rootfs.log"
    die "$1"
  }
  debootstrap --variant=minbase bookworm "$rootfs" "$DEBIAN_MIRROR" >"$rootfs.log" 2>&1 \
    || base_failed "debootstrap failed (is $DEBIAN_MIRROR reachable?)"
  # The interpreter the Dockerfile's `python -m venv` and `python` expect, and the CA bundle.
  chroot "$rootfs" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
    sh -c 'apt-get install -y -qq --no-install-recommends python3 python3-venv python3-pip python-is-python3 ca-certificates \
           && apt-get clean && rm -rf /var/lib/apt/lists/*' >>"$rootfs.log" 2>&1 \
    || base_failed "installing python3 into the base failed"
  # The environment python:*-slim images set (an imported tarball has none: no PATH at all).
  tar -C "$rootfs" -c . | podman import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$BASE_IMAGE" >>"$rootfs.log" 2>&1 \
    || base_failed "podman import of the base failed"
  rm -rf "$rootfs" "$rootfs.log"
  log "base $BASE_IMAGE imported"
}

build_image() {
  local started
  started=$(date +%s)
  build_base
  log "building $IMAGE from the Dockerfile (PYTHON_IMAGE=$BASE_IMAGE; layers cached)"
  local mounts=()
  [ -f "$CA_BUNDLE" ] && mounts=(-v "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro")
  if ! podman build --format docker --layers --build-arg "PYTHON_IMAGE=$BASE_IMAGE" "${mounts[@]}" \
      -t "$IMAGE" "$ROOT" >"$WORK/build.log" 2>&1; then
    tail -40 "$WORK/build.log" >&2
    die "podman build failed (full log above, last 40 lines)"
  fi
  BUILD_S=$(( $(date +%s) - started ))
  IMAGE_MB=$(( $(podman image inspect --format '{{.Size}}' "$IMAGE") / 1000000 ))
  log "built $IMAGE in ${BUILD_S}s, ${IMAGE_MB} MB"
}

if [ "${1:-}" = build ]; then
  WORK=$(mktemp -d /tmp/aiops-verify.XXXXXX)
  trap 'rm -rf "$WORK"' EXIT
  ensure_tools
  build_image
  echo "$IMAGE"
  exit 0
fi
[ $# -eq 0 ] || die "unknown argument $1 (usage: $0 [build])"

# --- the host's services -------------------------------------------------------------------------

tcp_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

preflight() {
  local pg_hostport=${PG_URL#*://}
  pg_hostport=${pg_hostport#*@}
  pg_hostport=${pg_hostport%%/*}
  local pg_host=${pg_hostport%:*} pg_port=${pg_hostport##*:}
  [ "$pg_port" != "$pg_hostport" ] || pg_port=5432
  tcp_open "$pg_host" "$pg_port" || die "no PostgreSQL answers on $pg_host:$pg_port (AIOPS_VERIFY_PG_URL=$PG_URL): start one, or point AIOPS_VERIFY_PG_URL at a superuser URL of yours"
  tcp_open "${REDIS_ADDR%:*}" "${REDIS_ADDR##*:}" || die "no Redis answers on $REDIS_ADDR (AIOPS_VERIFY_REDIS): start one, or point AIOPS_VERIFY_REDIS at host:port"
  PYTHON=${AIOPS_VERIFY_PYTHON:-$ROOT/.venv/bin/python}
  if [ -z "${AIOPS_VERIFY_PYTHON:-}" ] && [ ! -x "$PYTHON" ]; then
    log "no $ROOT/.venv: creating it (make .venv/.run-deps)"
    make -C "$ROOT" .venv/.run-deps >&2 || die "cannot create .venv (make .venv/.run-deps failed); set AIOPS_VERIFY_PYTHON to a Python with requirements.txt installed"
  fi
  "$PYTHON" -c 'import django, psycopg, redis' 2>/dev/null || die "$PYTHON lacks this project's requirements (make .venv/.run-deps)"
}

helper() { "$PYTHON" "$ROOT/deploy/podman/verify.py" "$@"; }
# The same, as a Django process of the deployment (the host plays the web role's part: it decides).
with_app_env() { (set -a && . "$WORK/app.env" && AIOPS_RUN_DIR="$WORK/run" && exec "$@"); }
driver() { with_app_env "$PYTHON" "$ROOT/deploy/podman/verify.py" "$@"; }

# --- containers ------------------------------------------------------------------------------------

# Every role the image has (deploy/docker/entrypoint.sh), in the order they are checked.
ROLES=(migrate web worker outbound beat watch flower mcp worker-with-mcp)
LONG_RUNNING=("${ROLES[@]:1}")
declare -a ROLES_OK=() ROLES_FAILED=()
PLAYBOOK_RESOLVED=false
SANDBOX_PID=""
DB_CREATED=""
REDIS_DB=""

# Containers, the sandbox, the database and the Redis database go, whatever happened (idempotent).
release() {
  local ids
  ids=$(podman ps -aq --filter "label=$LABEL" 2>/dev/null || true)
  # shellcheck disable=SC2086
  [ -z "$ids" ] || podman rm -f -t 5 $ids >/dev/null 2>&1 || true
  if [ -n "$SANDBOX_PID" ]; then
    kill "$SANDBOX_PID" 2>/dev/null || true
    wait "$SANDBOX_PID" 2>/dev/null || true
    SANDBOX_PID=""
  fi
  if [ -n "$DB_CREATED" ]; then
    # shellcheck disable=SC2086
    helper db-drop "$PG_URL" "$DB_NAME" $DB_ROLES >&2 || log "could not drop database $DB_NAME"
    DB_CREATED=""
  fi
  if [ -n "$REDIS_DB" ]; then
    helper redis-flush "$REDIS_ADDR" "$REDIS_DB" >&2 || log "could not flush Redis database $REDIS_DB"
    REDIS_DB=""
  fi
}

cleanup() {
  local status=$?
  set +e
  release
  rm -rf "$WORK"
  exit "$status"
}

# Every container: the host's network (the host's PostgreSQL, Redis and sandbox are on its
# loopback), no healthcheck timers (they need systemd), a read-only root filesystem with /tmp in
# memory, as compose and the manifests run it.
run_role() {
  local name=$1
  shift
  # A hostname of its own: with host networking every container would be `vm`, and two Celery
  # workers with one node name (worker@vm) share a pidbox queue, so a ping could be answered by
  # the other container's worker or by none.
  podman run -d --name "aiops-verify-$name-$RUN_ID" --hostname "aiops-verify-$name" --label "$LABEL" \
    --network host --no-healthcheck --read-only --tmpfs /tmp --env-file "$WORK/app.env" -v "$WORK/kubeconfig:/run/secrets/kubeconfig:ro" \
    "$@" >/dev/null
}

container_logs() { podman logs "aiops-verify-$1-$RUN_ID" 2>&1 | tail -"${2:-30}" >&2; }
stop_role() { podman rm -f -t 10 "aiops-verify-$1-$RUN_ID" >/dev/null 2>&1 || true; }
running() { [ "$(podman inspect --format '{{.State.Running}}' "aiops-verify-$1-$RUN_ID" 2>/dev/null)" = true ]; }

# wait_until SECONDS ROLE COMMAND...: poll COMMAND until it succeeds; fail early if ROLE's container exits.
wait_until() {
  local deadline=$(( $(date +%s) + $1 )) role=$2
  shift 2
  while [ "$(date +%s)" -lt "$deadline" ]; do
    "$@" >/dev/null 2>&1 && return 0
    if [ "$role" != - ] && ! running "$role"; then
      log "$role exited: $(podman inspect --format '{{.State.ExitCode}}' "aiops-verify-$role-$RUN_ID" 2>/dev/null)"
      return 1
    fi
    sleep 1
  done
  return 1
}

record() {
  if [ "$2" = 0 ]; then
    ROLES_OK+=("$1")
    log "role $1: ok"
  else
    ROLES_FAILED+=("$1")
    log "role $1: FAILED"
    container_logs "$1" 40
  fi
}

# The uid and the read-only root of a running container, as Kubernetes' securityContext asks.
user_and_root_fs_ok() {
  local c="aiops-verify-$1-$RUN_ID" uid
  uid=$(podman exec "$c" id -u)
  [ "$uid" = 10001 ] || { log "$1 runs as uid $uid, not 10001"; return 1; }
  if podman exec "$c" sh -c 'touch /app/.write-test' 2>/dev/null; then
    log "$1 could write to its root filesystem"
    return 1
  fi
  podman exec "$c" sh -c 'touch /tmp/.write-test' || { log "$1 cannot write /tmp"; return 1; }
}

celery_ping() {
  local c="aiops-verify-$1-$RUN_ID" node=${2:-worker}
  # Read the whole reply, then look in it: under pipefail, `| grep -q pong` fails whenever grep
  # exits on the match before celery has written its last line (SIGPIPE), which made a worker
  # that answered at once look dead for minutes.
  local reply
  reply=$(podman exec "$c" sh -c "celery -A aiops_site inspect ping --timeout 10 -d \"$node@\$(hostname)\"") || return 1
  [[ $reply == *pong* ]]
}

check_migrate() {
  # Migrations, then the sandbox registered as the cluster (AIOPS_REGISTER_CLUSTER).
  podman run --name "aiops-verify-migrate-$RUN_ID" --label "$LABEL" --network host --no-healthcheck \
    --read-only --tmpfs /tmp --env-file "$WORK/app.env" -v "$WORK/kubeconfig:/run/secrets/kubeconfig:ro" \
    -e AIOPS_REGISTER_CLUSTER=sandbox -e KUBECONFIG=/run/secrets/kubeconfig -e "AIOPS_MIGRATE_DATABASE_URL=$OWNER_URL" \
    "$IMAGE" migrate >"$WORK/migrate.log" 2>&1 \
    || { tail -30 "$WORK/migrate.log" >&2; return 1; }
  grep -q "registered cluster 'sandbox'" "$WORK/migrate.log" || { tail -30 "$WORK/migrate.log" >&2; return 1; }
  # Again: both steps are idempotent.
  podman run --rm --label "$LABEL" --network host --no-healthcheck --read-only --tmpfs /tmp --env-file "$WORK/app.env" \
    -e AIOPS_REGISTER_CLUSTER=sandbox -e KUBECONFIG=/run/secrets/kubeconfig -v "$WORK/kubeconfig:/run/secrets/kubeconfig:ro" \
    -e "AIOPS_MIGRATE_DATABASE_URL=$OWNER_URL" "$IMAGE" migrate >"$WORK/migrate-again.log" 2>&1 && grep -q "already registered" "$WORK/migrate-again.log"
}

start_web() { run_role web -e "AIOPS_WEB_PORT=$WEB_PORT" "$IMAGE" web --bind "127.0.0.1:$WEB_PORT"; }
check_web() {
  local port=$WEB_PORT
  wait_until 90 web helper http "http://127.0.0.1:$port/health" --expect 200 || return 1
  helper http "http://127.0.0.1:$port/ready" --expect 200 || return 1
  # A host the settings do not allow is refused, not served.
  helper http "http://127.0.0.1:$port/health" --host evil.example --expect 400 || return 1
  user_and_root_fs_ok web
}

start_worker() { run_role worker -e AIOPS_WORKER_CONCURRENCY=1 "$IMAGE" worker; }
check_worker() {
  wait_until 120 worker celery_ping worker || return 1
  user_and_root_fs_ok worker
}

# Deliveries alone, on their own queue (node outbound@<host>).
start_outbound() { run_role outbound "$IMAGE" outbound; }
check_outbound() {
  wait_until 120 outbound celery_ping outbound outbound || return 1
  user_and_root_fs_ok outbound
}

# A short poll interval, so beat sends the cluster poll within seconds (and the playbook's fault
# is seen soon after it is injected).
start_beat() { run_role beat -e AIOPS_POLL_INTERVAL=5 "$IMAGE" beat; }
check_beat() {
  wait_until 90 beat sh -c "podman logs aiops-verify-beat-$RUN_ID 2>&1 | grep -q 'Sending due task'" || return 1
  user_and_root_fs_ok beat
}

# The watcher: it takes the sandbox cluster's lease and lists (then watches) its kinds.
start_watch() { run_role watch "$IMAGE" watch; }
check_watch() {
  wait_until 90 watch sh -c "podman logs aiops-verify-watch-$RUN_ID 2>&1 | grep 'watch_listed' | grep -q '\"sandbox\"'" || return 1
  user_and_root_fs_ok watch
}

start_flower() {
  run_role flower -e "AIOPS_FLOWER_PORT=$FLOWER_PORT" -e FLOWER_BASIC_AUTH=verify:flower-pass "$IMAGE" flower --address=127.0.0.1
}
check_flower() {
  local port=$FLOWER_PORT
  wait_until 90 flower helper http "http://127.0.0.1:$port/healthcheck" --expect 200 || return 1
  helper http "http://127.0.0.1:$port/" --expect 401 || return 1
  helper http "http://127.0.0.1:$port/" --auth verify:wrong --expect 401 || return 1
  helper http "http://127.0.0.1:$port/" --auth verify:flower-pass --expect 200 || return 1
  helper http "http://127.0.0.1:$port/api/workers" --auth verify:flower-pass --expect 200 || return 1
  user_and_root_fs_ok flower
}

start_mcp() {
  run_role mcp -e "AIOPS_MCP_PORT=$MCP_ROLE_PORT" -e AIOPS_MCP_TOKEN=verify-mcp-token -e KUBECONFIG=/run/secrets/kubeconfig "$IMAGE" mcp
}
check_mcp() {
  local port=$MCP_ROLE_PORT
  wait_until 90 mcp helper http "http://127.0.0.1:$port/mcp" --method POST --expect 401 || return 1
  # A real MCP client in another container of the image calls a tool on the sandbox with the token.
  podman run --rm --label "$LABEL" --network host --no-healthcheck --read-only --tmpfs /tmp --env-file "$WORK/app.env" \
    -v "$ROOT/deploy/podman/mcp_call.py:/tmp/mcp_call.py:ro" \
    "$IMAGE" python /tmp/mcp_call.py "http://127.0.0.1:$port/mcp" verify-mcp-token list_namespaces payments >&2 || return 1
  user_and_root_fs_ok mcp
}

# The worker and its MCP server in one container (compose's worker), at the URL migrate registered.
start_worker_with_mcp() {
  run_role worker-with-mcp -e "AIOPS_MCP_PORT=$MCP_PORT" -e AIOPS_MCP_TOKEN=verify-mcp-token \
    -e KUBECONFIG=/run/secrets/kubeconfig -e "AIOPS_WORKER_METRICS_PORT=$METRICS_PORT" -e AIOPS_METRICS_ADDRESS=127.0.0.1 \
    "$IMAGE" worker-with-mcp
}
check_worker_with_mcp() {
  local metrics_port=$METRICS_PORT
  wait_until 120 worker-with-mcp celery_ping worker-with-mcp || return 1
  wait_until 60 worker-with-mcp helper http "http://127.0.0.1:$MCP_PORT/mcp" --method POST --expect 401 || return 1
  helper http "http://127.0.0.1:$metrics_port/metrics" --expect 200 || return 1
  user_and_root_fs_ok worker-with-mcp
}

# --- main ------------------------------------------------------------------------------------------

main() {
  WORK=$(mktemp -d /tmp/aiops-verify.XXXXXX)
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  ensure_tools
  preflight
  build_image

  DB_NAME="aiops_verify_${RUN_ID}_$(date +%s)"
  # The deployment's two PostgreSQL roles, of this run's own: migrate runs as the owner (which
  # then grants the app role its rows), every other role as the app role.
  DB_ROLES="${DB_NAME}_owner ${DB_NAME}_app"
  DB_CREATED=1  # whatever part of it was made goes at the end
  local urls
  # shellcheck disable=SC2086
  urls=$(helper db-create "$PG_URL" "$DB_NAME" $DB_ROLES) || die "cannot create database $DB_NAME with $PG_URL"
  OWNER_URL=$(sed -n 1p <<<"$urls")
  REDIS_DB=$(helper redis-pick "$REDIS_ADDR") || die "no empty Redis database on $REDIS_ADDR"
  local db_url redis_url
  db_url=$(sed -n 2p <<<"$urls")
  redis_url="redis://$REDIS_ADDR/$REDIS_DB"
  log "database $DB_NAME, Redis database $REDIS_DB"
  # The MCP port of the mcp and worker-with-mcp roles, known before migrate registers the server.
  MCP_PORT=$(helper free-port)
  cat >"$WORK/app.env" <<ENV
DATABASE_URL=$db_url
REDIS_URL=$redis_url
AIOPS_SECRET_KEY=verify-image-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
AIOPS_ALLOWED_HOSTS=localhost,127.0.0.1
AIOPS_CELERY_QUEUE=verify-$RUN_ID
AIOPS_MCP_URL=http://127.0.0.1:$MCP_PORT/mcp
AIOPS_DB_APP_ROLE=${DB_NAME}_app
ENV
  chmod 600 "$WORK/app.env"

  # The sandbox cluster, on the host, with this checkout's Python (TLS and a bearer token).
  mkdir -p "$WORK/sandbox"
  (set -a && . "$WORK/app.env" && AIOPS_RUN_DIR="$WORK/run" \
    && exec "$PYTHON" "$ROOT/manage.py" sandbox serve --tls --scenario demo --tick 5 --kubeconfig "$WORK/sandbox/kubeconfig") \
    >"$WORK/sandbox.log" 2>&1 &
  SANDBOX_PID=$!
  wait_until 60 - test -s "$WORK/sandbox/kubeconfig" || { cat "$WORK/sandbox.log" >&2; die "the sandbox did not start"; }
  # The containers run as uid 10001: they get a readable copy (the original is 0600).
  install -m 644 "$WORK/sandbox/kubeconfig" "$WORK/kubeconfig"

  # The migrate role registers the sandbox and our MCP server's tools; then the playbook's stage
  # is set (the demo's own faults cleared, one rule enabled, an approver). The long-running roles
  # start together (each on ports of its own), then each is checked.
  local status role
  status=0
  check_migrate || status=$?
  record migrate "$status"
  if [ "$status" = 0 ]; then
    driver playbook-prepare --kubeconfig "$WORK/sandbox/kubeconfig" >&2 || die "cannot prepare the playbook's stage"
    WEB_PORT=$(helper free-port) FLOWER_PORT=$(helper free-port) MCP_ROLE_PORT=$(helper free-port) METRICS_PORT=$(helper free-port)
    for role in "${LONG_RUNNING[@]}"; do
      "start_${role//-/_}" || log "role $role: podman run failed"
    done
    for role in "${LONG_RUNNING[@]}"; do
      status=0
      "check_${role//-/_}" || status=$?
      record "$role" "$status"
      # worker-with-mcp, beat and watch stay for the playbook; the plain worker must not take its steps.
      case "$role" in worker-with-mcp|beat|watch) ;; *) stop_role "$role" ;; esac
    done
  fi

  # The playbook: the worker and its MCP server (worker-with-mcp), beat and the watcher in
  # containers, the sandbox on the host. A fault becomes an incident (the watch stream or beat's
  # poll, whichever sees it first), the run asks for approval,
  # the approval is decided through decide_approval, the restart lands, the incident resolves.
  if running worker-with-mcp && running beat && running watch; then
    if driver playbook --kubeconfig "$WORK/sandbox/kubeconfig" >&2; then
      PLAYBOOK_RESOLVED=true
    else
      log "the playbook did not resolve; the worker's last lines:"
      container_logs worker-with-mcp 60
    fi
  fi
  release

  local ok failed
  ok=$(printf '%s\n' "${ROLES_OK[@]}" | helper json-list)
  failed=$(printf '%s\n' ${ROLES_FAILED[@]+"${ROLES_FAILED[@]}"} | helper json-list)
  printf '{"roles_ok": %s, "roles_failed": %s, "playbook_resolved": %s, "image_mb": %s, "build_s": %s}\n' \
    "$ok" "$failed" "$PLAYBOOK_RESOLVED" "$IMAGE_MB" "$BUILD_S"
  [ ${#ROLES_FAILED[@]} -eq 0 ] && [ ${#ROLES_OK[@]} -eq ${#ROLES[@]} ] && [ "$PLAYBOOK_RESOLVED" = true ]
}

main
