#!/usr/bin/env bash
# CI piece: the store's Go suite and the Python interop tests against a real
# Apache Kafka broker (scripts/kafka.sh) and a Confluent-compatible registry
# (Apicurio, scripts/registry.sh), plus the Python tests against profilesvc's
# embedded mode. Starts what it needs and stops it again on any exit.
#
#   scripts/ci-real.sh
#
# Steps:
#   1. scripts/kafka.sh up        -> COMPACTKV_BROKERS
#   2. scripts/registry.sh up     -> COMPACTKV_REGISTRY (the Go suite does not
#                                    get it: it keeps its in-process registry;
#                                    set CI_REAL_GO_REGISTRY=1 to give it)
#   3. go test -race ./kvstore/... with COMPACTKV_BROKERS (real-broker mode)
#   4. go test -race -run 'TestThreeInstances|TestPartitionedInstances'
#      ./cmd/profilesvc: three profilesvc instances on one 6-partition topic of
#      the real broker, in global mode (token reads, consistent reads, deletes
#      through another instance) and in partitioned mode (--group: routing to
#      the owner, merged listings, kill -9 failover, rejoin)
#   5. scripts/pyenv.sh, then .venv/bin/pytest tests/python (embedded + real)
#
# Environment knobs:
#   CI_REAL_SKIP_REGISTRY=1   do not start Apicurio; the real-broker Python
#                             tests then skip (they need a registry URL)
#   CI_REAL_GO_REGISTRY=1     run the Go suite against Apicurio too
#   COMPACTKV_KAFKA_DIR, COMPACTKV_REGISTRY_DIR: state dirs (see those scripts)
set -euo pipefail
cd "$(dirname "$0")/.."
export GOFLAGS="${GOFLAGS:--mod=mod}"
mkdir -p .cache

began=$SECONDS
step() { echo "== $* (+$((SECONDS - began))s)"; }

cleanup() {
  local rc=$?
  step "stopping the broker and the registry"
  scripts/registry.sh down >/dev/null 2>&1 || true
  scripts/kafka.sh down >/dev/null 2>&1 || true
  echo "== ci-real: exit $rc after $((SECONDS - began))s"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "starting Apache Kafka (scripts/kafka.sh up)"
brokers_line=$(scripts/kafka.sh up | tail -n 1)
[[ "$brokers_line" == COMPACTKV_BROKERS=* ]] || { echo "kafka.sh up printed: $brokers_line" >&2; exit 1; }
export COMPACTKV_BROKERS="${brokers_line#COMPACTKV_BROKERS=}"
echo "COMPACTKV_BROKERS=$COMPACTKV_BROKERS"

registry=""
if [[ "${CI_REAL_SKIP_REGISTRY:-}" != 1 ]]; then
  step "starting the schema registry (scripts/registry.sh up)"
  # Started in the background; it warms up while the Go suite runs.
  scripts/registry.sh up >.cache/ci-registry-up.log 2>&1 &
  registry_pid=$!
fi

step "go test -race ./kvstore/... against the real broker"
if [[ "${CI_REAL_GO_REGISTRY:-}" == 1 && -n "${registry_pid:-}" ]]; then
  wait "$registry_pid" || { cat .cache/ci-registry-up.log >&2; exit 1; }
  registry_pid=""
  export COMPACTKV_REGISTRY="$(tail -n 1 .cache/ci-registry-up.log | sed -n 's/^COMPACTKV_REGISTRY=//p')"
fi
go test -race -count=1 ./kvstore/...

step "go test -race -run 'TestThreeInstances|TestPartitionedInstances' ./cmd/profilesvc against the real broker"
go test -race -count=1 -v -run '^(TestThreeInstances|TestPartitionedInstances)$' ./cmd/profilesvc

if [[ -n "${registry_pid:-}" ]]; then
  if ! wait "$registry_pid"; then
    cat .cache/ci-registry-up.log >&2
    echo "schema registry did not start" >&2
    exit 1
  fi
fi
if [[ "${CI_REAL_SKIP_REGISTRY:-}" != 1 ]]; then
  registry=$(tail -n 1 .cache/ci-registry-up.log | sed -n 's/^COMPACTKV_REGISTRY=//p')
  [[ -n "$registry" ]] || { cat .cache/ci-registry-up.log >&2; exit 1; }
  export COMPACTKV_REGISTRY="$registry"
  echo "COMPACTKV_REGISTRY=$COMPACTKV_REGISTRY"
  export COMPACTKV_REQUIRE_REAL=1 # the real-broker Python tests must run, not skip
fi

step "Python environment (scripts/pyenv.sh)"
scripts/pyenv.sh >/dev/null

step "pytest tests/python (profilesvc embedded, and real broker + registry)"
set +e
.venv/bin/pytest tests/python
rc=$?
set -e
case $rc in
  0) ;;
  5) echo "pytest collected no tests: that is a failure here" >&2; exit 1 ;;
  *) exit "$rc" ;;
esac
step "done"
