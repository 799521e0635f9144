#!/usr/bin/env bash
# Single-node Apache Kafka (KRaft, broker+controller in one JVM) for tests.
#
#   scripts/kafka.sh up       start (idempotent); last stdout line: COMPACTKV_BROKERS=127.0.0.1:PORT
#   scripts/kafka.sh down     stop (SIGTERM, then SIGKILL after a bound) and delete its data
#   scripts/kafka.sh status   "running ..." (exit 0) or "not running" (exit 1)
#   scripts/kafka.sh env      prints: export COMPACTKV_BROKERS=127.0.0.1:PORT   (exit 1 if not running)
#   scripts/kafka.sh fetch    only download the jars into the cache
#   scripts/kafka.sh tool CLASS [ARGS...]
#                             run a Kafka CLI class with the cached classpath, e.g.
#                             scripts/kafka.sh tool org.apache.kafka.tools.TopicCommand \
#                               --bootstrap-server "$COMPACTKV_BROKERS" --list
#
# Kafka and its runtime dependencies come from Maven (scripts/kafka-pom.xml) and
# are cached in $COMPACTKV_CACHE/kafka-<version>/lib (default ~/.cache/compactkv);
# later runs reuse the cache without touching the network.
#
# Environment knobs:
#   COMPACTKV_CACHE          jar cache root                (default: $HOME/.cache/compactkv)
#   COMPACTKV_KAFKA_VERSION  org.apache.kafka:kafka_2.13   (default: 4.1.1)
#   COMPACTKV_KAFKA_DIR      state dir: pid, ports, logs, data (default: <repo>/.cache/kafka)
#   COMPACTKV_KAFKA_PORT     fixed broker port             (default: a free port)
#   COMPACTKV_KAFKA_HEAP     JVM heap flags                (default: -Xms128m -Xmx512m)
#   COMPACTKV_KAFKA_TIMEOUT  seconds to wait for startup   (default: 60)
#
# Log cleaner notes (measured with Kafka 4.1.1 and this broker config: cleaner
# backoff 200 ms, log.cleaner.min.compaction.lag.ms=0):
#   * Topic configs that compact within ~0.2 s:
#       cleanup.policy=compact, segment.ms=100, min.cleanable.dirty.ratio=0.01,
#       delete.retention.ms=100   (min.compaction.lag.ms defaults to 0 here)
#   * The cleaner never touches the ACTIVE segment, and a segment only rolls
#     (segment.ms / segment.bytes) when a new record is appended. So after the
#     writes under test: sleep > segment.ms, then produce one more record (any
#     key); the older segment is cleaned ~0.1-0.3 s later. Without that extra
#     append nothing is ever compacted (max.compaction.lag.ms does not help).
#   * Tombstones: the first cleaning only removes older values of the key and
#     stamps the tombstone's delete horizon (+delete.retention.ms). The tombstone
#     itself goes on a LATER cleaning, which needs new dirty data: again sleep
#     > max(segment.ms, delete.retention.ms) and append one more record.
#     delete.retention.ms=0 is accepted but still needs that second pass.
#   * Limits: segment.bytes >= 1048576 (1 MiB; smaller is rejected),
#     segment.ms >= 1, max.compaction.lag.ms >= 1. The test-only topic config
#     internal.segment.bytes (e.g. 1024) IS accepted and rolls by size.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
POM="$SCRIPT_DIR/kafka-pom.xml"

KAFKA_VERSION="${COMPACTKV_KAFKA_VERSION:-4.1.1}"
CACHE_ROOT="${COMPACTKV_CACHE:-${HOME:-/root}/.cache/compactkv}"
KAFKA_HOME="$CACHE_ROOT/kafka-$KAFKA_VERSION"
LIB_DIR="$KAFKA_HOME/lib"
STATE_DIR="${COMPACTKV_KAFKA_DIR:-$REPO_ROOT/.cache/kafka}"
DATA_DIR="$STATE_DIR/data"
PID_FILE="$STATE_DIR/kafka.pid"
PORT_FILE="$STATE_DIR/port"
CONTROLLER_PORT_FILE="$STATE_DIR/controller-port"
SERVER_LOG="$STATE_DIR/server.log"
STDOUT_LOG="$STATE_DIR/stdout.log"
START_TIMEOUT="${COMPACTKV_KAFKA_TIMEOUT:-60}"
HEAP_OPTS="${COMPACTKV_KAFKA_HEAP:--Xms128m -Xmx512m}"

LOG_NAME=kafka.sh
PID_PATTERN='kafka\.Kafka'
# shellcheck source=scripts/lib.sh
source "$SCRIPT_DIR/lib.sh"

cache_key() {
  # Cache is valid for this exact pom content + version.
  { cat "$POM"; echo "$KAFKA_VERSION"; } | sha256sum | cut -d' ' -f1
}

cache_complete() {
  [[ -f "$KAFKA_HOME/.complete" && "$(cat "$KAFKA_HOME/.complete")" == "$(cache_key)" ]] &&
    compgen -G "$LIB_DIR/kafka_2.13-$KAFKA_VERSION.jar" >/dev/null
}

fetch() {
  cache_complete && return 0
  ensure_tools
  mkdir -p "$KAFKA_HOME"
  (
    # Serialize concurrent fetches of the same version.
    if command -v flock >/dev/null 2>&1; then flock 9; fi
    cache_complete && exit 0
    log "fetching org.apache.kafka:kafka_2.13:$KAFKA_VERSION and its runtime dependencies via Maven"
    local_build="$KAFKA_HOME/build"
    rm -rf "$local_build" "$LIB_DIR.tmp"
    mkdir -p "$local_build"
    cp "$POM" "$local_build/pom.xml"
    if ! (cd "$local_build" && mvn -B -q -Dkafka.version="$KAFKA_VERSION" \
          dependency:copy-dependencies -DincludeScope=runtime \
          -DoutputDirectory="$LIB_DIR.tmp" >"$local_build/mvn.log" 2>&1); then
      tail -n 50 "$local_build/mvn.log" >&2
      die "maven could not resolve Kafka $KAFKA_VERSION"
    fi
    rm -rf "$LIB_DIR"
    mv "$LIB_DIR.tmp" "$LIB_DIR"
    cache_key >"$KAFKA_HOME/.complete"
    log "cached $(ls "$LIB_DIR" | wc -l) jars in $LIB_DIR"
  ) 9>"$KAFKA_HOME/.lock"
}

# Log4j2 config for CLI tools: warnings to stderr only.
tools_log4j() {
  local f="$KAFKA_HOME/tools-log4j2.xml"
  if [[ ! -f "$f" ]]; then
    cat >"$f" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <Console name="stderr" target="SYSTEM_ERR"><PatternLayout pattern="[%d] %p %m (%c)%n"/></Console>
  </Appenders>
  <Loggers>
    <Root level="WARN"><AppenderRef ref="stderr"/></Root>
  </Loggers>
</Configuration>
EOF
  fi
  echo "$f"
}

run_tool() {
  (($# >= 1)) || die "usage: kafka.sh tool CLASS [ARGS...]"
  fetch
  local cls="$1"; shift
  exec "$(java_bin)" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto \
    -Djava.awt.headless=true -Dlog4j2.configurationFile="$(tools_log4j)" \
    -cp "$LIB_DIR/*" "$cls" "$@"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_ports() {
  # Two distinct free loopback ports (broker, controller).
  if command -v python3 >/dev/null 2>&1; then
    python3 - <<'EOF'
import socket
socks = []
for _ in range(2):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
  else
    local ports=() p
    while ((${#ports[@]} < 2)); do
      p=$((20000 + RANDOM % 40000))
      port_open "$p" || [[ " ${ports[*]:-} " == *" $p "* ]] || ports+=("$p")
    done
    echo "${ports[@]}"
  fi
}

cluster_id() {
  # 16 random bytes, base64url without padding (what kafka-storage random-uuid prints).
  # A leading '-' would be parsed as an option by kafka-storage: swap it.
  head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' | sed 's/^-/A/'
}

print_brokers() { echo "COMPACTKV_BROKERS=127.0.0.1:$(cat "$PORT_FILE")"; }

up() {
  if pid_alive && port_open "$(cat "$PORT_FILE")"; then
    log "already running (pid $(cat "$PID_FILE"))"
    print_brokers
    return 0
  fi
  if [[ -f "$PID_FILE" ]]; then
    log "stale state in $STATE_DIR; cleaning up"
    down >/dev/null 2>&1 || true
  fi
  fetch
  local java; java="$(java_bin)"
  local port cport
  read -r port cport < <(free_ports)
  [[ -n "${COMPACTKV_KAFKA_PORT:-}" ]] && port="$COMPACTKV_KAFKA_PORT"
  [[ "$port" != "$cport" ]] || die "could not pick distinct ports"

  rm -rf "$DATA_DIR"
  mkdir -p "$DATA_DIR/logs" "$STATE_DIR"
  echo "$port" >"$PORT_FILE"
  echo "$cport" >"$CONTROLLER_PORT_FILE"

  cat >"$STATE_DIR/server.properties" <<EOF
# generated by scripts/kafka.sh
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$DATA_DIR/logs

# single node
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
delete.topic.enable=true

# fast log cleaner / retention for tests
log.cleaner.enable=true
log.cleaner.threads=1
log.cleaner.backoff.ms=200
log.cleaner.min.compaction.lag.ms=0
log.cleaner.dedupe.buffer.size=16777216
log.retention.check.interval.ms=1000
log.initial.task.delay.ms=1000
file.delete.delay.ms=1000
log.segment.delete.delay.ms=1000

# keep the JVM small and shutdown quick
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
background.threads=2
controlled.shutdown.enable=true
EOF

  cat >"$STATE_DIR/log4j2.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <File name="server" fileName="$SERVER_LOG" append="true">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </File>
  </Appenders>
  <Loggers>
    <Root level="INFO"><AppenderRef ref="server"/></Root>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="org.apache.kafka.clients" level="WARN"/>
    <Logger name="org.apache.kafka.common.metrics" level="WARN"/>
    <Logger name="org.apache.kafka.common.utils.AppInfoParser" level="WARN"/>
  </Loggers>
</Configuration>
EOF
  : >"$SERVER_LOG"
  : >"$STDOUT_LOG"

  local jvm_opts=($HEAP_OPTS -XX:+UseSerialGC -Xshare:auto -Djava.awt.headless=true
    -Dlog4j2.configurationFile="$STATE_DIR/log4j2.xml" -Dkafka.logs.dir="$STATE_DIR"
    -cp "$LIB_DIR/*")

  if ! "$java" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto \
      -Dlog4j2.configurationFile="$(tools_log4j)" -cp "$LIB_DIR/*" \
      kafka.tools.StorageTool format --config "$STATE_DIR/server.properties" \
      --cluster-id "$(cluster_id)" >>"$STDOUT_LOG" 2>&1; then
    cat "$STDOUT_LOG" >&2
    die "kafka-storage format failed"
  fi

  # New session so the broker outlives the calling shell; $$ of the bash that
  # execs java is java's pid.
  setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$PID_FILE" \
    "$java" "${jvm_opts[@]}" kafka.Kafka "$STATE_DIR/server.properties" \
    </dev/null >>"$STDOUT_LOG" 2>&1 &

  local deadline=$((SECONDS + START_TIMEOUT))
  while :; do
    if [[ -s "$PID_FILE" ]] && ! kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
      log "broker exited during startup; stdout/stderr:"
      tail -n 40 "$STDOUT_LOG" >&2 || true
      log "server.log tail:"
      tail -n 60 "$SERVER_LOG" >&2 || true
      rm -f "$PID_FILE"
      exit 1
    fi
    if port_open "$port" && grep -q 'Kafka Server started' "$SERVER_LOG" 2>/dev/null; then
      break
    fi
    if ((SECONDS >= deadline)); then
      log "broker not ready after ${START_TIMEOUT}s; server.log tail:"
      tail -n 60 "$SERVER_LOG" >&2 || true
      tail -n 20 "$STDOUT_LOG" >&2 || true
      down >/dev/null 2>&1 || true
      exit 1
    fi
    sleep 0.2
  done
  log "broker up (pid $(cat "$PID_FILE"), port $port, log $SERVER_LOG)"
  print_brokers
}

down() {
  if [[ -f "$PID_FILE" ]]; then
    local pid; pid="$(cat "$PID_FILE" 2>/dev/null || true)"
    if [[ -n "$pid" ]] && pid_alive; then
      stop_pid "$pid" 30 broker
    else
      log "not running (stale pid file)"
    fi
  else
    log "not running"
  fi
  rm -rf "$DATA_DIR"
  rm -f "$PID_FILE" "$PORT_FILE" "$CONTROLLER_PORT_FILE"
}

status() {
  if pid_alive; then
    local port; port="$(cat "$PORT_FILE" 2>/dev/null || echo '?')"
    if port_open "$port"; then
      echo "running: pid $(cat "$PID_FILE"), COMPACTKV_BROKERS=127.0.0.1:$port, log $SERVER_LOG"
    else
      echo "starting (port $port not open yet): pid $(cat "$PID_FILE"), log $SERVER_LOG"
    fi
    return 0
  fi
  echo "not running"
  return 1
}

env_cmd() {
  pid_alive || die "not running (use: scripts/kafka.sh up)"
  echo "export COMPACTKV_BROKERS=127.0.0.1:$(cat "$PORT_FILE")"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  env) env_cmd ;;
  fetch) fetch; echo "$LIB_DIR" ;;
  tool) shift; run_tool "$@" ;;
  *) echo "usage: $0 up|down|status|env|fetch|tool CLASS [ARGS...]" >&2; exit 2 ;;
esac
