# Helpers shared by kafka.sh and registry.sh. Source it after setting
# LOG_NAME (the prefix of log lines), PID_FILE and PID_PATTERN (what the
# process's command line must contain for the pid file to be ours).

log() { echo "$LOG_NAME: $*" >&2; }
die() { log "error: $*"; exit 1; }

java_bin() {
  if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then echo "$JAVA_HOME/bin/java"; else echo java; fi
}

# ensure_tools [extra Debian packages...]: install Java 17+ and Maven (and the
# extras, named by the command they provide) with apt-get if they are missing,
# as a fresh CI machine needs.
ensure_tools() {
  local missing=() cmd
  command -v "$(java_bin)" >/dev/null 2>&1 || missing+=(default-jdk-headless)
  command -v mvn >/dev/null 2>&1 || missing+=(maven)
  for cmd in "$@"; do command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd"); done
  ((${#missing[@]} == 0)) && return 0
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "installing ${missing[*]} with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
  else
    die "need ${missing[*]}"
  fi
}

# pid_alive: the pid file names a live process whose command line has PID_PATTERN.
pid_alive() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid; pid="$(cat "$PID_FILE" 2>/dev/null)" || return 1
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null &&
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$PID_PATTERN"
}

# stop_pid PID SECONDS WHAT: SIGTERM, wait up to SECONDS, then SIGKILL.
stop_pid() {
  local pid=$1 secs=$2 what=$3 i
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < secs * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "$what did not stop in ${secs}s; SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.2
  fi
  log "stopped (pid $pid)"
}
