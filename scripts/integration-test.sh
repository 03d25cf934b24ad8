#!/usr/bin/env bash
# End-to-end test of TaskForge: the API, two workers and the scheduler as separate
# processes on Postgres and Redis, driven over HTTP with curl.
#
#   bash scripts/integration-test.sh
#
# With a Docker engine that answers (`docker info`), it builds and starts the
# docker-compose.yml stack under a project name of its own and tears it down (volumes
# included) at the end. Without one, it runs the same flow against a local Postgres and
# Redis: a scratch database, its own Redis key prefix and queue, `taskforge migrate`, then
# `taskforge api`, two `taskforge worker --demo-handlers` and a `taskforge scheduler` as
# background processes, all stopped and cleaned up at the end, whatever happened.
#
# Environment:
#   TASKFORGE_IT_MODE   auto (default) | docker | local
#   local mode:
#     POSTGRES_DSN, else TASKFORGE_TEST_POSTGRES_DSN, else
#       postgresql://postgres@127.0.0.1:5432/postgres   (must be allowed to CREATE DATABASE)
#     REDIS_ADDR / REDIS_DB / REDIS_PASSWORD, else TASKFORGE_TEST_REDIS_URL, else
#       127.0.0.1:6379 db 0
#     TASKFORGE_BIN       the taskforge executable, else .venv/bin/taskforge (from uv.lock)
#
# Every step prints PASS or FAIL; the last line is `integration: N passed, M failed`, and
# the exit status is 0 only when every step ran and passed. A run takes about 15 s (plus
# the image build in docker mode).

set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2

RUN_ID=$(od -An -N5 -tx1 /dev/urandom | tr -d ' \n')
WORK=$(mktemp -d "${TMPDIR:-/tmp}/taskforge-it.XXXXXX")
STEPS_TOTAL=10
PASSED=0
FAILED=0
MODE=""
API=""
PIDS=()
ROLES=()
SCRATCH_CREATED=false
REDIS_USED=false
COMPOSE=()
COMPOSE_STARTED=false

log() { printf '%s\n' "$*"; }
die() {
  # A setup problem: the flow cannot run, so this run fails (it never passes by default).
  log "FAIL  setup: $*"
  FAILED=$((FAILED + 1))
  exit 1
}

# --- helpers in Python: JSON fallback, ports, scratch database, Redis keys --------------

read -r -d '' HELPER <<'PY'
import asyncio, json, os, socket, sys
from urllib.parse import urlsplit, urlunsplit

def env(name):
    return os.environ[name]

def json_path():
    value = json.load(sys.stdin)
    path = sys.argv[2]
    if path == "keys":
        print(",".join(sorted(value)))
        return
    for key in filter(None, path.lstrip(".").split(".")):
        value = value.get(key) if isinstance(value, dict) else None
    print(value if isinstance(value, str) else json.dumps(value))

def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        print(sock.getsockname()[1])

def scratch_dsn():
    parts = urlsplit(env("IT_ADMIN_DSN"))
    print(urlunsplit(parts._replace(path="/" + env("IT_DATABASE"))))

def admin(statement):
    import asyncpg

    async def run():
        conn = await asyncpg.connect(env("IT_ADMIN_DSN"), timeout=10)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    try:
        asyncio.run(run())
    except Exception as exc:
        sys.exit(f"{type(exc).__name__}: {exc}")

def redis_settings():
    url = os.environ.get("TASKFORGE_TEST_REDIS_URL", "")
    parts = urlsplit(url) if url else None
    if parts is None:
        print("127.0.0.1:6379", "0", "", sep="\n")
        return
    host = parts.hostname or "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    print(f"{host}:{parts.port or 6379}", (parts.path or "/0").lstrip("/") or "0",
          parts.password or "", sep="\n")

def redis_client():
    import redis

    host, _, port = env("REDIS_ADDR").rpartition(":")
    return redis.Redis(host=host.strip("[]") or "127.0.0.1", port=int(port),
                       db=int(os.environ.get("REDIS_DB") or 0),
                       password=os.environ.get("REDIS_PASSWORD") or None,
                       socket_timeout=5)

def redis_ping():
    try:
        redis_client().ping()
    except Exception as exc:
        sys.exit(f"{type(exc).__name__}: {exc}")

def redis_clean():
    client = redis_client()
    deleted = 0
    try:
        for pattern in sys.argv[2:]:
            keys = list(client.scan_iter(match=pattern, count=500))
            if keys:
                deleted += client.delete(*keys)
    except Exception as exc:
        sys.exit(f"{type(exc).__name__}: {exc}")
    print(deleted)

commands = {
    "json": json_path,
    "free-port": free_port,
    "scratch-dsn": scratch_dsn,
    "create-db": lambda: admin(f'CREATE DATABASE "{env("IT_DATABASE")}"'),
    "drop-db": lambda: admin(f'DROP DATABASE IF EXISTS "{env("IT_DATABASE")}" WITH (FORCE)'),
    "redis-settings": redis_settings,
    "redis-ping": redis_ping,
    "redis-clean": redis_clean,
}
commands[sys.argv[1]]()
PY

# Python for the helpers: the interpreter taskforge runs on (it has asyncpg and redis),
# else python3. JSON is read with jq when it is installed.
PY=$(command -v python3 || true)
jget() { # jget PATH (".state", ".checks.redis", or "keys") < JSON
  if command -v jq >/dev/null 2>&1; then
    if [[ $1 == keys ]]; then jq -r 'keys | join(",")'; else jq -r "$1"; fi
  else
    "$PY" -c "$HELPER" json "$1"
  fi
}

# --- HTTP -------------------------------------------------------------------------------

STATUS=""
BODY=""
request() { # request METHOD PATH [JSON] [curl args...] -> STATUS, BODY, $WORK/headers
  local method=$1 path=$2 data=${3-}
  shift 2
  (($# > 0)) && shift
  local args=(-sS -X "$method" -o "$WORK/body" -D "$WORK/headers" -w '%{http_code}'
    --max-time 10 "$@")
  [[ -n $data ]] && args+=(-H 'Content-Type: application/json' --data "$data")
  : >"$WORK/body"
  : >"$WORK/headers"
  STATUS=$(curl "${args[@]}" "$API$path" 2>"$WORK/curl.err") || STATUS=000
  BODY=$(cat "$WORK/body")
}
header() { # header NAME: the value of a response header of the last request
  grep -i "^$1:" "$WORK/headers" | tail -n 1 | cut -d: -f2- | tr -d '\r' | sed 's/^ *//'
}
field() { printf '%s' "$BODY" | jget "$1" 2>/dev/null; }
seen() { printf 'HTTP %s %s' "$STATUS" "$(printf '%s' "$BODY" | head -c 400)"; }

enqueue() { # enqueue JSON -> JOB_ID (empty unless 201)
  JOB_ID=""
  request POST /jobs "$1"
  [[ $STATUS == 201 ]] && JOB_ID=$(field .id)
}

wait_for_state() { # wait_for_state ID SECONDS STATE...: poll GET /jobs/ID until a STATE
  local id=$1 deadline=$((SECONDS + $2)) state=""
  shift 2
  while :; do
    request GET "/jobs/$id"
    state=$(field .state)
    for wanted in "$@"; do
      [[ $state == "$wanted" ]] && return 0
    done
    if ((SECONDS >= deadline)); then
      DETAIL="job $id still $state after the deadline, wanted $*; last error: $(field .lastError)"
      return 1
    fi
    sleep 0.1
  done
}

wait_until_ready() { # wait_until_ready SECONDS: poll /readyz while the API process lives
  local deadline=$((SECONDS + $1))
  while ((SECONDS < deadline)); do
    request GET /readyz
    [[ $STATUS == 200 ]] && return 0
    if [[ $MODE == local ]] && ! kill -0 "${PIDS[0]}" 2>/dev/null; then
      log "the API process exited:"
      tail -n 30 "$WORK/api.log"
      return 1
    fi
    sleep 0.2
  done
  log "the API was not ready within $1 s; last answer: $(seen)"
  return 1
}

# --- the flow ---------------------------------------------------------------------------

DETAIL=""
step() { # step NAME FUNCTION
  local name=$1
  DETAIL=""
  if "$2"; then
    PASSED=$((PASSED + 1))
    log "PASS  $name"
  else
    FAILED=$((FAILED + 1))
    log "FAIL  $name: ${DETAIL:-$(seen)}"
  fi
}
expect_status() { [[ $STATUS == "$1" ]] || { DETAIL="expected HTTP $1, got $(seen)"; return 1; }; }
expect_eq() { # expect_eq WHAT ACTUAL EXPECTED
  [[ $2 == "$3" ]] || { DETAIL="$1 is '$2', expected '$3'; $(seen)"; return 1; }
}

check_healthz() {
  request GET /healthz
  expect_status 200
}

check_readyz() {
  request GET /readyz
  expect_status 200 &&
    expect_eq status "$(field .status)" ready &&
    expect_eq checks.postgres "$(field .checks.postgres)" ok &&
    expect_eq checks.redis "$(field .checks.redis)" ok
}

check_email_succeeds() {
  enqueue '{"jobType":"email","payload":{"to":"a@b.com","subject":"integration"}}'
  expect_status 201 || return 1
  local id=$JOB_ID
  wait_for_state "$id" 20 SUCCEEDED || return 1
  expect_eq attemptCount "$(field .attemptCount)" 1
}

DEAD_JOB=""
check_fail_goes_to_dlq() {
  enqueue '{"jobType":"fail","initialDelay":0.2,"maxAttempts":3}'
  expect_status 201 || return 1
  DEAD_JOB=$JOB_ID
  wait_for_state "$DEAD_JOB" 20 DLQ || return 1
  expect_eq attemptCount "$(field .attemptCount)" 3 || return 1
  expect_eq retryCount "$(field .retryCount)" 2 || return 1
  request GET "/dlq/$DEAD_JOB"
  expect_status 200 &&
    expect_eq jobId "$(field .jobId)" "$DEAD_JOB" &&
    expect_eq attempts "$(field .attempts)" 3
}

check_replay_runs_again() {
  [[ -n $DEAD_JOB ]] || { DETAIL="no dead-lettered job to replay (previous step failed)"; return 1; }
  request GET "/dlq/$DEAD_JOB"
  expect_status 200 || return 1
  local first_failure
  first_failure=$(field .failedAt)
  request POST "/dlq/$DEAD_JOB/replay"
  expect_status 200 || return 1
  local state
  state=$(field .state)
  [[ $state == PENDING || $state == RUNNING ]] ||
    { DETAIL="replayed job is $state, expected PENDING or RUNNING; $(seen)"; return 1; }
  wait_for_state "$DEAD_JOB" 20 DLQ || return 1
  expect_eq attemptCount "$(field .attemptCount)" 3 || return 1
  request GET "/dlq/$DEAD_JOB"
  expect_status 200 || return 1
  [[ $(field .failedAt) != "$first_failure" ]] ||
    { DETAIL="the dead letter was not written again (failedAt $first_failure)"; return 1; }
}

check_cancel_running_sleep() {
  enqueue '{"jobType":"sleep","payload":{"seconds":300},"visibilityTimeout":3}'
  expect_status 201 || return 1
  local id=$JOB_ID
  wait_for_state "$id" 20 RUNNING || return 1
  request POST "/jobs/$id/cancel" '{"reason":"integration test"}'
  expect_status 200 &&
    expect_eq state "$(field .state)" CANCELLED &&
    expect_eq reason "$(field .reason)" "integration test" || return 1
  request GET "/jobs/$id"
  expect_eq state "$(field .state)" CANCELLED
}

check_idempotency_key() {
  local body
  body='{"jobType":"noop","idempotencyKey":"it-'$RUN_ID'"}'
  enqueue "$body"
  expect_status 201 || return 1
  local first=$JOB_ID
  request POST /jobs "$body"
  expect_status 200 &&
    expect_eq id "$(field .id)" "$first"
}

check_metrics() {
  request GET /metrics
  expect_status 200 || return 1
  local metric
  for metric in taskforge_job_success_total taskforge_dlq_count taskforge_queue_depth; do
    grep -q "^# TYPE $metric" "$WORK/body" ||
      { DETAIL="/metrics has no $metric"; return 1; }
  done
}

check_error_shape() {
  request GET /jobs/00000000-0000-4000-8000-000000000000 "" -H "X-Request-ID: it-$RUN_ID"
  expect_status 404 &&
    expect_eq "error keys" "$(field keys)" code,details,message &&
    expect_eq code "$(field .code)" not_found &&
    expect_eq X-Request-ID "$(header X-Request-ID)" "it-$RUN_ID" || return 1
  request POST /jobs '{"payload":{}}'
  expect_status 400 &&
    expect_eq "error keys" "$(field keys)" code,details,message &&
    expect_eq code "$(field .code)" validation_error || return 1
  [[ -n $(header X-Request-ID) ]] || { DETAIL="no X-Request-ID on a 400"; return 1; }
}

check_processes_alive() {
  local dead=()
  if [[ $MODE == local ]]; then
    local i
    for i in "${!PIDS[@]}"; do
      kill -0 "${PIDS[$i]}" 2>/dev/null || dead+=("${ROLES[$i]}")
    done
  else
    local id running=0 state
    for id in $("${COMPOSE[@]}" ps -q api worker scheduler); do
      state=$(docker inspect --format '{{.Name}} {{.State.Status}}' "$id")
      if [[ $state == *" running" ]]; then running=$((running + 1)); else dead+=("$state"); fi
    done
    ((running == 4)) || dead+=("$running of 4 containers running")
  fi
  ((${#dead[@]} == 0)) || { DETAIL="not running: ${dead[*]}"; return 1; }
}

run_flow() {
  step "GET /healthz answers 200" check_healthz
  step "GET /readyz answers 200 with postgres and redis ok" check_readyz
  step "an email job runs to SUCCEEDED" check_email_succeeds
  step "a failing job is retried, then dead-lettered (GET /dlq/{id})" check_fail_goes_to_dlq
  step "a replayed dead letter runs again and returns to the DLQ" check_replay_runs_again
  step "a running sleep job is cancelled" check_cancel_running_sleep
  step "a reused idempotencyKey answers 201 then 200 with the same id" check_idempotency_key
  step "GET /metrics exposes taskforge_job_success_total" check_metrics
  step "errors are {code,message,details} with X-Request-ID" check_error_shape
  step "the API, both workers and the scheduler are still running" check_processes_alive
}

# --- teardown, on every exit ------------------------------------------------------------

stop_processes() {
  local pid i deadline=$((SECONDS + 15))
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  if ((FAILED > 0)); then
    for i in "${!PIDS[@]}"; do
      log "--- ${ROLES[$i]} (pid ${PIDS[$i]}), last lines ---"
      grep -v '"taskforge.http.access"' "$WORK/${ROLES[$i]}.log" 2>/dev/null | tail -n 25
    done
  fi
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [[ $MODE == docker ]] && $COMPOSE_STARTED; then
    ((FAILED > 0 || status != 0)) && "${COMPOSE[@]}" logs --no-color --tail 40 2>&1 | tail -n 200
    "${COMPOSE[@]}" down --volumes --remove-orphans --timeout 10 >"$WORK/down.log" 2>&1 ||
      { log "docker compose down failed:"; cat "$WORK/down.log"; }
  fi
  if [[ $MODE == local ]]; then
    ((${#PIDS[@]} > 0)) && stop_processes
    if $SCRATCH_CREATED; then
      "$PY" -c "$HELPER" drop-db || log "could not drop database $IT_DATABASE"
    fi
    if $REDIS_USED; then
      "$PY" -c "$HELPER" redis-clean "$TASKFORGE_REDIS_PREFIX*" "$QUEUE_NAME" "$QUEUE_NAME:*" \
        >/dev/null || log "could not delete the Redis keys of this run"
    fi
  fi
  if ((PASSED + FAILED < STEPS_TOTAL && FAILED == 0)); then
    FAILED=1 # stopped before the flow ran to its end: never a pass
  fi
  log "integration: $PASSED passed, $FAILED failed"
  if ((FAILED > 0 || status != 0)) && compgen -G "$WORK/*.log" >/dev/null; then
    log "(process logs kept in $WORK)"
  else
    rm -rf "$WORK"
  fi
  ((FAILED == 0 && status == 0)) && exit 0
  exit 1
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# --- docker mode ------------------------------------------------------------------------

run_docker() {
  if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
  elif command -v docker-compose >/dev/null 2>&1; then
    COMPOSE=(docker-compose)
  else
    die "the Docker engine answers but neither 'docker compose' nor 'docker-compose' is installed"
  fi
  [[ -n $PY ]] || command -v jq >/dev/null 2>&1 || die "needs jq or python3 to read JSON"
  local port=8080
  [[ -n $PY ]] && port=$("$PY" -c "$HELPER" free-port)
  export TASKFORGE_API_PORT=$port
  COMPOSE+=(--project-name "taskforge-it-$RUN_ID" --file "$ROOT/docker-compose.yml")
  API="http://127.0.0.1:$port"
  log "integration: docker mode, project taskforge-it-$RUN_ID, API on $API"
  COMPOSE_STARTED=true
  "${COMPOSE[@]}" up --detach --build --scale worker=2 ||
    die "'${COMPOSE[*]} up' failed (see the output above)"
  wait_until_ready 180 || die "the stack did not become ready"
  run_flow
}

# --- local mode -------------------------------------------------------------------------

start_role() { # start_role NAME ARGS...: a taskforge process in the background
  local name=$1
  shift
  "$TASKFORGE_BIN" "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  ROLES+=("$name")
}

run_local() {
  if [[ -n ${TASKFORGE_BIN-} ]]; then
    [[ -x $TASKFORGE_BIN ]] || die "TASKFORGE_BIN=$TASKFORGE_BIN is not an executable"
  else
    # .venv holds exactly what uv.lock pins; ./run creates (or refreshes) it.
    [[ -x $ROOT/.venv/bin/taskforge ]] || "$ROOT/run" --list >/dev/null ||
      die "could not create .venv from uv.lock (see the output above)"
    TASKFORGE_BIN=$ROOT/.venv/bin/taskforge
  fi
  local shebang
  shebang=$(head -n 1 "$TASKFORGE_BIN" | sed -n 's/^#! *\([^ ]*python[^ ]*\)$/\1/p')
  [[ -n $shebang && -x $shebang ]] && PY=$shebang
  [[ -n $PY ]] || die "no Python interpreter found for the helpers"
  "$PY" -c 'import asyncpg, redis' 2>/dev/null ||
    die "$PY cannot import asyncpg and redis (install taskforge into it)"
  command -v curl >/dev/null || die "curl is not installed"

  export IT_ADMIN_DSN=${POSTGRES_DSN:-${TASKFORGE_TEST_POSTGRES_DSN:-postgresql://postgres@127.0.0.1:5432/postgres}}
  export IT_DATABASE="taskforge_it_$RUN_ID"
  if [[ -z ${REDIS_ADDR-} ]]; then
    local settings
    mapfile -t settings < <("$PY" -c "$HELPER" redis-settings)
    export REDIS_ADDR=${settings[0]} REDIS_DB=${settings[1]} REDIS_PASSWORD=${settings[2]-}
  fi
  export REDIS_DB=${REDIS_DB:-0}
  export TASKFORGE_REDIS_PREFIX="taskforge:it-$RUN_ID:"
  export QUEUE_NAME="taskforge-it-$RUN_ID"

  local failure
  failure=$("$PY" -c "$HELPER" redis-ping 2>&1) ||
    die "Redis at $REDIS_ADDR (db $REDIS_DB) does not answer: $failure"
  REDIS_USED=true
  failure=$("$PY" -c "$HELPER" create-db 2>&1) ||
    die "cannot create database $IT_DATABASE with POSTGRES_DSN/TASKFORGE_TEST_POSTGRES_DSN: $failure"
  SCRATCH_CREATED=true
  POSTGRES_DSN=$("$PY" -c "$HELPER" scratch-dsn)
  export POSTGRES_DSN
  export SCHEDULER_TICK=0.2 WORKER_SHUTDOWN_GRACE=3 LOG_LEVEL=${LOG_LEVEL:-info}
  unset HTTP_ADDR METRICS_ADDR WORKER_QUEUES TASKFORGE_DEMO_HANDLERS API_TOKEN

  local port
  port=$("$PY" -c "$HELPER" free-port)
  API="http://127.0.0.1:$port"
  log "integration: local mode ($TASKFORGE_BIN), database $IT_DATABASE, queue $QUEUE_NAME"
  "$TASKFORGE_BIN" migrate >"$WORK/migrate.log" 2>&1 ||
    { cat "$WORK/migrate.log"; die "taskforge migrate failed"; }

  HTTP_ADDR="127.0.0.1:$port" start_role api api
  start_role worker-1 worker --demo-handlers
  start_role worker-2 worker --demo-handlers
  start_role scheduler scheduler
  wait_until_ready 30 || die "the API did not become ready on $API"
  run_flow
}

# --- main -------------------------------------------------------------------------------

MODE=${TASKFORGE_IT_MODE:-auto}
case $MODE in
  auto)
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
      MODE=docker
    else
      MODE=local
      log "integration: no Docker engine answers; running against local Postgres and Redis"
    fi
    ;;
  docker)
    docker info >/dev/null 2>&1 || die "TASKFORGE_IT_MODE=docker but no Docker engine answers"
    ;;
  local) ;;
  *) die "TASKFORGE_IT_MODE must be auto, docker or local, not '$MODE'" ;;
esac

if [[ $MODE == docker ]]; then run_docker; else run_local; fi
