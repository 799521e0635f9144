"""Fixtures for the Python interop tests: profilesvc (built from this repo)
as the Go side, confluent-kafka (the seed guide's client) as the Python side.

Each test gets a `stack`, parametrized over two modes:

* ``embedded``: profilesvc runs its in-process broker and registry on free
  ports; Python talks to those.
* ``real``: profilesvc and Python talk to the Kafka broker named by
  COMPACTKV_BROKERS (scripts/kafka.sh up) and the Confluent-compatible
  registry named by COMPACTKV_REGISTRY (scripts/registry.sh up: Apicurio's
  ccompat API). Skipped, with the reason, when either is unset.

Run: .venv/bin/pytest tests/python   (scripts/pyenv.sh creates .venv)
"""

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

REPO = Path(__file__).resolve().parents[2]
USER_V1_AVSC = (REPO / "testdata" / "user.avsc").read_text()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def await_true(cond, timeout=30.0, interval=0.05, what="condition"):
    """Poll cond() until it returns a truthy value; fail after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@pytest.fixture(scope="session")
def profilesvc_bin(tmp_path_factory) -> Path:
    """profilesvc built once per session from this checkout."""
    out = tmp_path_factory.mktemp("bin") / "profilesvc"
    env = dict(os.environ, GOFLAGS=os.environ.get("GOFLAGS", "-mod=mod"))
    subprocess.run(["go", "build", "-o", str(out), "./cmd/profilesvc"], cwd=REPO, env=env, check=True)
    return out


class Service:
    """One profilesvc process."""

    def __init__(self, binary: Path, data_dir: Path, args: list[str]):
        self.binary, self.data_dir, self.base_args = binary, data_dir, args
        self.http = f"127.0.0.1:{free_port()}"
        self.proc = None
        self.log_path = data_dir / "profilesvc.log"

    @property
    def url(self) -> str:
        return f"http://{self.http}"

    def start(self, topic: str):
        self.topic = topic
        args = [str(self.binary), "--http-addr", self.http, "--data-dir", str(self.data_dir),
                "--topic", topic, "--compact-interval", "0"] + self.base_args
        self.log = open(self.log_path, "ab")
        # An empty working directory: no stray .env is read.
        self.proc = subprocess.Popen(args, cwd=self.data_dir, stdout=self.log, stderr=subprocess.STDOUT)
        await_true(self._ready, timeout=60, what=f"profilesvc /readyz (log {self.log_path})")
        return self

    def _ready(self):
        if self.proc.poll() is not None:
            pytest.fail(f"profilesvc exited with {self.proc.returncode}:\n{self.log_text()}")
        try:
            with urllib.request.urlopen(self.url + "/readyz", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.log.close()
        self.proc = None

    def restart(self, topic: str):
        self.stop()
        return self.start(topic)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def request(self, method: str, path: str, body=None):
        """Returns (status, parsed JSON body or None)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                raw = r.read()
                return r.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, raw.decode(errors="replace")

    def metric(self, name: str) -> float:
        """The value of an unlabelled metric in /metrics (None if absent)."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as r:
            text = r.read().decode()
        m = re.search(rf"^{re.escape(name)}(?:{{}})? (\S+)$", text, re.M)
        return float(m.group(1)) if m else None


class Stack:
    """A broker, a registry and profilesvc on a topic, in one of the modes."""

    def __init__(self, mode, svc: Service, bootstrap: str, registry: str):
        self.mode, self.svc, self.bootstrap, self.registry = mode, svc, bootstrap, registry
        self.topics = [svc.topic]  # deleted at the end in real mode

    @property
    def topic(self) -> str:
        return self.svc.topic

    def admin(self) -> AdminClient:
        return AdminClient({"bootstrap.servers": self.bootstrap})

    def create_topic(self, name: str, partitions: int):
        """Creates a compacted topic (as profilesvc would, but with more partitions)."""
        adm = self.admin()  # keep the handle alive until the result is in
        fs = adm.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1,
                                                  config={"cleanup.policy": "compact"})])
        fs[name].result(timeout=30)
        self.topics.append(name)
        await_true(lambda: name in adm.list_topics(timeout=5).topics, what=f"topic {name}")


@pytest.fixture(params=["embedded", "real"])
def stack(request, profilesvc_bin, tmp_path):
    mode = request.param
    topic = unique("py-" + request.node.originalname.removeprefix("test_").replace("_", "-"))
    if mode == "embedded":
        kafka, reg = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        svc = Service(profilesvc_bin, tmp_path, ["--embedded-kafka-addr", kafka, "--embedded-registry-addr", reg])
        bootstrap, registry = kafka, f"http://{reg}"
    else:
        bootstrap = os.environ.get("COMPACTKV_BROKERS")
        registry = os.environ.get("COMPACTKV_REGISTRY")
        # COMPACTKV_REQUIRE_REAL=1 (scripts/ci-real.sh) turns these skips into failures.
        skip = pytest.fail if os.environ.get("COMPACTKV_REQUIRE_REAL") == "1" else pytest.skip
        if not bootstrap:
            skip("real mode needs COMPACTKV_BROKERS (scripts/kafka.sh up)")
        if not registry:
            skip("real mode needs a Confluent-compatible registry at COMPACTKV_REGISTRY (scripts/registry.sh up)")
        svc = Service(profilesvc_bin, tmp_path, ["--brokers", bootstrap, "--registry", registry])
    svc.start(topic)
    st = Stack(mode, svc, bootstrap, registry)
    yield st
    svc.stop()
    if mode == "real":
        adm = st.admin()
        for f in adm.delete_topics(st.topics).values():
            try:
                f.result(timeout=30)
            except Exception:  # best effort: the topic may be gone already
                pass
