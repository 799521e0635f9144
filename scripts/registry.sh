#!/usr/bin/env bash
# Schema registry with the Confluent REST API, for tests: Apicurio Registry
# (Quarkus app, in-memory H2 storage) fetched from Maven as
# io.apicurio:apicurio-registry-app:<ver>:tar.gz:all. Its Confluent-compatible
# API lives under /apis/ccompat/v7, so COMPACTKV_REGISTRY includes that path.
#
#   scripts/registry.sh up      start (idempotent); last stdout line:
#                               COMPACTKV_REGISTRY=http://127.0.0.1:PORT/apis/ccompat/v7
#   scripts/registry.sh down    stop it (SIGTERM, then SIGKILL after a bound); state is in memory
#   scripts/registry.sh status  "running ..." (exit 0) or "not running" (exit 1)
#   scripts/registry.sh env     prints: export COMPACTKV_REGISTRY=...   (exit 1 if not running)
#   scripts/registry.sh fetch   only download into the cache
#
# Needs no Kafka broker. Java 17 works with 3.0.x (3.1+ needs Java 21).
#
# Environment knobs:
#   COMPACTKV_CACHE                  cache root (default: $HOME/.cache/compactkv)
#   COMPACTKV_APICURIO_VERSION       default 3.0.9
#   COMPACTKV_REGISTRY_DIR           state dir (default: <repo>/.cache/registry)
#   COMPACTKV_REGISTRY_PORT          fixed port (default: a free port)
#   COMPACTKV_REGISTRY_COMPATIBILITY global compatibility set after start
#                                    (default BACKWARD, like Confluent; NONE = Apicurio's default)
#   COMPACTKV_REGISTRY_TIMEOUT       seconds to wait for startup (default 90)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
VERSION="${COMPACTKV_APICURIO_VERSION:-3.0.9}"
CACHE_ROOT="${COMPACTKV_CACHE:-${HOME:-/root}/.cache/compactkv}"
APP_HOME="$CACHE_ROOT/apicurio-$VERSION"
APP_DIR="$APP_HOME/app"
STATE_DIR="${COMPACTKV_REGISTRY_DIR:-$REPO_ROOT/.cache/registry}"
PID_FILE="$STATE_DIR/registry.pid"
PORT_FILE="$STATE_DIR/port"
LOG_FILE="$STATE_DIR/registry.log"
START_TIMEOUT="${COMPACTKV_REGISTRY_TIMEOUT:-90}"
COMPAT="${COMPACTKV_REGISTRY_COMPATIBILITY:-BACKWARD}"
API_PATH="/apis/ccompat/v7"

LOG_NAME=registry.sh
PID_PATTERN='apicurio-registry'
# shellcheck source=scripts/lib.sh
source "$SCRIPT_DIR/lib.sh"

runner_jar() { compgen -G "$APP_DIR/*-runner.jar" | head -n1 || true; }

cache_complete() { [[ -f "$APP_HOME/.complete" && -n "$(runner_jar)" ]]; }

fetch() {
  cache_complete && return 0
  ensure_tools curl
  mkdir -p "$APP_HOME"
  (
    if command -v flock >/dev/null 2>&1; then flock 9; fi
    cache_complete && exit 0
    log "fetching io.apicurio:apicurio-registry-app:$VERSION (tar.gz:all) via Maven"
    local_build="$APP_HOME/build"
    rm -rf "$local_build" "$APP_DIR"
    mkdir -p "$local_build" "$APP_DIR"
    cat >"$local_build/pom.xml" <<'EOF'
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.compactkv.dev</groupId>
  <artifactId>registry-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
</project>
EOF
    if ! (cd "$local_build" && mvn -B -q dependency:copy \
          -Dartifact="io.apicurio:apicurio-registry-app:$VERSION:tar.gz:all" \
          -DoutputDirectory="$local_build/out" >"$local_build/mvn.log" 2>&1); then
      tail -n 50 "$local_build/mvn.log" >&2
      die "maven could not fetch apicurio-registry-app $VERSION"
    fi
    tar -xzf "$local_build"/out/*.tar.gz -C "$APP_DIR"
    rm -rf "$local_build/out"
    [[ -n "$(runner_jar)" ]] || die "no *-runner.jar in the apicurio $VERSION archive (3.1+ uses quarkus-run.jar and needs Java 21)"
    echo "$VERSION" >"$APP_HOME/.complete"
    log "cached in $APP_DIR"
  ) 9>"$APP_HOME/.lock"
}

url() { echo "http://127.0.0.1:$(cat "$PORT_FILE")$API_PATH"; }

answers() { curl -sf -m 2 -o /dev/null "$(url)/subjects"; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

up() {
  if pid_alive && answers; then
    log "already running (pid $(cat "$PID_FILE"))"
    echo "COMPACTKV_REGISTRY=$(url)"
    return 0
  fi
  [[ -f "$PID_FILE" ]] && { down >/dev/null 2>&1 || true; }
  fetch
  mkdir -p "$STATE_DIR"
  local port="${COMPACTKV_REGISTRY_PORT:-$(free_port)}"
  echo "$port" >"$PORT_FILE"
  : >"$LOG_FILE"
  local jar; jar="$(runner_jar)"
  setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$PID_FILE" \
    "$(java_bin)" -Xms64m -Xmx512m -XX:+UseSerialGC -Xshare:auto -Djava.awt.headless=true \
    -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$port" \
    -Dquarkus.http.access-log.enabled=false \
    -jar "$jar" </dev/null >>"$LOG_FILE" 2>&1 &

  local deadline=$((SECONDS + START_TIMEOUT))
  while ! answers; do
    if [[ -s "$PID_FILE" ]] && ! kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
      log "registry exited during startup; log tail:"
      tail -n 60 "$LOG_FILE" >&2 || true
      rm -f "$PID_FILE"
      exit 1
    fi
    if ((SECONDS >= deadline)); then
      log "registry not ready after ${START_TIMEOUT}s; log tail:"
      tail -n 60 "$LOG_FILE" >&2 || true
      down >/dev/null 2>&1 || true
      exit 1
    fi
    sleep 0.2
  done
  if [[ "$COMPAT" != "NONE" ]]; then
    curl -sf -m 5 -o /dev/null -X PUT -H 'Content-Type: application/vnd.schemaregistry.v1+json' \
      -d "{\"compatibility\":\"$COMPAT\"}" "$(url)/config" || log "warning: could not set compatibility $COMPAT"
  fi
  log "registry up (pid $(cat "$PID_FILE"), log $LOG_FILE, compatibility $COMPAT)"
  echo "COMPACTKV_REGISTRY=$(url)"
}

down() {
  if pid_alive; then
    stop_pid "$(cat "$PID_FILE")" 20 registry
  else
    log "not running"
  fi
  rm -f "$PID_FILE" "$PORT_FILE"
}

status() {
  if pid_alive; then
    echo "running: pid $(cat "$PID_FILE"), COMPACTKV_REGISTRY=$(url), log $LOG_FILE"
    return 0
  fi
  echo "not running"
  return 1
}

env_cmd() {
  pid_alive || die "not running (use: scripts/registry.sh up)"
  echo "export COMPACTKV_REGISTRY=$(url)"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  env) env_cmd ;;
  fetch) fetch; echo "$APP_DIR" ;;
  *) echo "usage: $0 up|down|status|env|fetch" >&2; exit 2 ;;
esac
