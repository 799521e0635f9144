#!/usr/bin/env bash
# Creates (idempotently) the repo's Python virtualenv at .venv/ with the
# Confluent Kafka client (Avro + Schema Registry serdes) and pytest.
#
#   scripts/pyenv.sh            create/update .venv, print installed versions
#   scripts/pyenv.sh --check-broker
#                               same, then a snappy produce/consume round trip
#                               against $COMPACTKV_BROKERS (see scripts/kafka.sh)
#   .venv/bin/python ...        use it
#
# Environment knobs:
#   COMPACTKV_VENV      venv path (default: <repo>/.venv)
#   COMPACTKV_PY_REQS   space-separated pip requirements (default below)
#   PYTHON              interpreter used to create the venv (default: python3)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
VENV="${COMPACTKV_VENV:-$REPO_ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
# confluent-kafka extras: "avro" pulls fastavro+avro+requests, "schemaregistry"
# pulls the registry client (httpx2, authlib, cachetools, attrs).
REQS="${COMPACTKV_PY_REQS:-confluent-kafka[avro,schemaregistry]==2.16.1 pytest>=8}"
STAMP="$VENV/.compactkv-reqs"

log() { echo "pyenv.sh: $*" >&2; }

ensure_gitignore() {
  local gi="$REPO_ROOT/.gitignore" e
  touch "$gi"
  for e in .venv/ data/ /.cache/; do
    grep -qxF "$e" "$gi" || echo "$e" >>"$gi"
  done
}

ensure_python() {
  if ! command -v "$PYTHON" >/dev/null 2>&1 || ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
      log "installing python3 + python3-venv with apt-get"
      DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv python3-pip >&2
    else
      log "error: need $PYTHON with the venv module"; exit 1
    fi
  fi
}

check() {
  "$VENV/bin/python" - <<'EOF'
from confluent_kafka.schema_registry.avro import AvroSerializer, AvroDeserializer  # noqa: F401
from confluent_kafka.schema_registry import SchemaRegistryClient  # noqa: F401
import confluent_kafka, fastavro, pytest  # noqa: F401
# librdkafka rejects a codec at config time if it was built without it.
for codec in ("snappy", "lz4", "zstd", "gzip"):
    confluent_kafka.Producer({"compression.type": codec, "log_level": 0})
EOF
}

# Round trip with snappy against a running broker (scripts/kafka.sh up).
broker_check() {
  [[ -n "${COMPACTKV_BROKERS:-}" ]] || { log "error: --check-broker needs COMPACTKV_BROKERS"; exit 1; }
  "$VENV/bin/python" - <<'EOF'
import os, uuid
from confluent_kafka import Producer, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
b = os.environ["COMPACTKV_BROKERS"]
admin = AdminClient({"bootstrap.servers": b})
t = "pyenv-check-" + uuid.uuid4().hex[:8]
admin.create_topics([NewTopic(t, 1, 1)])[t].result(timeout=30)
try:
    p = Producer({"bootstrap.servers": b, "compression.type": "snappy", "linger.ms": 5})
    sent = [(b"k%d" % i, b"v%d" % i * 20) for i in range(20)]
    for k, v in sent:
        p.produce(t, key=k, value=v)
    assert p.flush(30) == 0, "produce did not complete"
    c = Consumer({"bootstrap.servers": b, "group.id": t, "enable.auto.commit": False})
    c.assign([TopicPartition(t, 0, 0)])
    got = []
    while len(got) < len(sent):
        m = c.poll(10)
        assert m is not None, "timed out consuming"
        assert not m.error(), m.error()
        got.append((m.key(), m.value()))
    c.close()
    assert got == sent, "round trip mismatch"
    print("snappy round trip via", b, "ok (%d records)" % len(got))
finally:
    admin.delete_topics([t])[t].result(timeout=30)
EOF
}

ensure_gitignore
if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$REQS" ]] && check 2>/dev/null; then
  log "$VENV is up to date"
else
  ensure_python
  if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  log "installing: $REQS"
  # shellcheck disable=SC2086  # REQS is a space-separated list on purpose
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check $REQS >&2
  check
  echo "$REQS" >"$STAMP"
fi

"$VENV/bin/python" - <<'EOF'
import sys, confluent_kafka, fastavro, pytest
print("python", sys.version.split()[0])
print("confluent-kafka", getattr(confluent_kafka, "__version__", None) or confluent_kafka.version(), "librdkafka", confluent_kafka.libversion()[0])
print("fastavro", fastavro.__version__)
print("pytest", pytest.__version__)
EOF

if [[ "${1:-}" == "--check-broker" ]]; then broker_check; fi
