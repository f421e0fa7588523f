#!/usr/bin/env python3
"""Capture the exact request frames that real Kafka clients send.

This drives real clients against the `capture_broker` example of
ferry-protocol, which answers every request plausibly and writes each request
frame (without its 4-byte size prefix) to
`OUT/<client_id>/<NNN>-<ApiName>-v<version>.bin`.

Clients, each with its own client.id (which is also the fixture folder name):

- golden-librdkafka    confluent-kafka (librdkafka bundled in the wheel)
- golden-kafka-python  kafka-python
- golden-kcat          kcat (Debian's librdkafka), optional: a failure is a warning

At the end it prints which (client, API, version) were captured, and exits
non-zero if any API in REQUIRED_APIS is missing for librdkafka or kafka-python.
With --update it replaces protocol/tests/golden/fixtures/<client_id>/ with one
frame per (API, version): the first that names the topic or the group, or else
the first. It also writes fixtures/<client_id>.txt naming
the client's version and every request it sent, in order.

Every wait is bounded. The broker and every client run as child processes in
their own process groups, and are killed when the script ends, however it ends.

Usage, from anywhere in the repository:

    python3 protocol/tests/golden/capture.py            # capture and check
    python3 protocol/tests/golden/capture.py --update   # ... and rewrite fixtures
    python3 protocol/tests/golden/capture.py --check-clients   # imports only

Needs: pip install confluent-kafka==2.16.1 kafka-python==3.0.12; apt-get install kcat.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import NoReturn

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
SCHEMAS = REPO / "protocol" / "schemas"
FIXTURES = HERE / "fixtures"

TOPIC = "golden-topic"
GROUP = "golden-group"
CLIENT_LIBRDKAFKA = "golden-librdkafka"
CLIENT_KAFKA_PYTHON = "golden-kafka-python"
CLIENT_KCAT = "golden-kcat"
REQUIRED_CLIENTS = (CLIENT_LIBRDKAFKA, CLIENT_KAFKA_PYTHON)
REQUIRED_APIS = (
    "ApiVersions",
    "Metadata",
    "Produce",
    "Fetch",
    "FindCoordinator",
    "JoinGroup",
    "SyncGroup",
    "OffsetCommit",
    "CreateTopics",
)

# Fixed so that the captured produce requests are the same from run to run.
TIMESTAMP_MS_BASE = 1_700_000_000_000
RECORD_COUNT = 3

BUILD_TIMEOUT_S = 1800
BROKER_START_TIMEOUT_S = 60
BROKER_STOP_TIMEOUT_S = 10
DRIVER_TIMEOUT_S = 240
KCAT_TIMEOUT_S = 20

FRAME_NAME = re.compile(r"^(\d+)-([A-Za-z]+)-v(\d+)\.bin$")
LISTENING = re.compile(r"^listening (\S+):(\d+)\s*$")


def log(message: str) -> None:
    print(f"capture: {message}", flush=True)


def fail(message: str) -> NoReturn:
    print(f"capture: ERROR: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


# --------------------------------------------------------------------------
# Process handling: every child is in its own process group, killed at exit.
# --------------------------------------------------------------------------


def kill_group(proc: subprocess.Popen, grace_s: float) -> None:
    """Ends a child we started, with its own children, by its process group."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        proc.wait(timeout=grace_s)


def run_bounded(cmd: list[str], timeout_s: float, what: str, **kwargs) -> tuple[int | None, str]:
    """Runs a command in its own process group. Returns (exit code or None on
    timeout, combined output)."""
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        text=True,
        **kwargs,
    )
    try:
        out, _ = proc.communicate(timeout=timeout_s)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        kill_group(proc, 5)
        out, _ = proc.communicate()
        log(f"{what}: timed out after {timeout_s:.0f}s, killed")
        return None, out or ""
    finally:
        kill_group(proc, 5)


class Broker:
    """The capture_broker example, started and stopped with bounded waits."""

    def __init__(self, cmd: list[str], log_path: Path) -> None:
        self.cmd = cmd
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.lines: queue.Queue[str | None] = queue.Queue()

    def start(self, timeout_s: float) -> str:
        log(f"starting broker: {' '.join(self.cmd)}")
        self.log_file = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=self.log_file,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            text=True,
        )
        # Drain stdout on a thread so the broker never blocks on a full pipe.
        threading.Thread(target=self._pump, daemon=True).start()
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.stop()
                fail(f"broker printed no 'listening HOST:PORT' line within {timeout_s:.0f}s; "
                     f"its stderr is in {self.log_path}")
            try:
                line = self.lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            if line is None:
                code = self.proc.wait(timeout=5)
                fail(f"broker exited (code {code}) before it was listening; stderr:\n"
                     + tail(self.log_path))
            match = LISTENING.match(line)
            if match is None:
                self.stop()
                fail(f"broker's first stdout line was {line!r}, expected 'listening HOST:PORT'")
            address = f"{match.group(1)}:{match.group(2)}"
            log(f"broker listening on {address}")
            return address

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None:
            kill_group(self.proc, BROKER_STOP_TIMEOUT_S)
            log(f"broker stopped (exit code {self.proc.returncode})")
        if getattr(self, "log_file", None):
            self.log_file.close()


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as err:
        return f"(cannot read {path}: {err})"


# --------------------------------------------------------------------------
# Client drivers. Each runs in a child process (`--drive NAME`), so a hung
# client library is killed by the parent's timeout.
# --------------------------------------------------------------------------


def run_stages(who: str, stages: list) -> None:
    """Runs each stage even if an earlier one failed, so that one bad response
    from the broker does not hide the requests that come after it. Exits
    non-zero if any stage failed."""
    import traceback

    failed = []
    for name, stage in stages:
        log(f"{who}: {name}")
        try:
            stage()
        except Exception:  # noqa: BLE001 - reported, and turned into the exit code
            traceback.print_exc(file=sys.stdout)
            log(f"{who}: {name}: FAILED")
            failed.append(name)
    if failed:
        log(f"{who}: failed stage(s): {', '.join(failed)}")
        sys.exit(1)
    log(f"{who}: done")


def drive_librdkafka(bootstrap: str, idempotence_off: bool) -> None:
    from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    common = {
        "bootstrap.servers": bootstrap,
        "client.id": CLIENT_LIBRDKAFKA,
        "broker.address.family": "v4",
        "socket.timeout.ms": 10000,
    }

    def create_topics() -> None:
        admin = AdminClient(common)
        futures = admin.create_topics(
            [NewTopic(TOPIC, num_partitions=1, replication_factor=1)],
            operation_timeout=5,
            request_timeout=15,
        )
        try:
            futures[TOPIC].result(timeout=20)
        except KafkaException as err:
            if err.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
            log("librdkafka: topic already exists (fine: the request was sent)")

    def produce() -> None:
        # librdkafka's own default leaves idempotence off.
        idempotence = {"enable.idempotence": False} if idempotence_off else {}
        producer = Producer({
            **common,
            "acks": "all",
            "compression.type": "none",
            "linger.ms": 5,
            "message.timeout.ms": 20000,
            **idempotence,
        })
        delivery_errors: list[str] = []

        def on_delivery(err, _msg) -> None:
            if err is not None:
                delivery_errors.append(str(err))

        for i in range(RECORD_COUNT):
            producer.produce(
                TOPIC,
                key=f"key-{i}".encode(),
                value=f"value-{i}".encode(),
                headers=[("golden-header", f"header-{i}".encode())],
                timestamp=TIMESTAMP_MS_BASE + i,
                on_delivery=on_delivery,
            )
        remaining = producer.flush(timeout=30)
        if remaining:
            raise RuntimeError(f"{remaining} message(s) still undelivered after flush(30s)")
        if delivery_errors:
            raise RuntimeError(f"delivery failed: {delivery_errors}")

    def consume_and_commit() -> None:
        consumer = Consumer({
            **common,
            "group.id": GROUP,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 1000,
        })
        assigned: list = []
        consumer.subscribe([TOPIC], on_assign=lambda _c, parts: assigned.extend(parts))
        try:
            poll_until_assigned(lambda: consumer.poll(0.5), lambda: bool(assigned), "librdkafka")
            committed = consumer.commit(offsets=[TopicPartition(TOPIC, 0, 1)], asynchronous=False)
            errors = [tp for tp in committed or [] if tp.error is not None]
            if errors:
                raise RuntimeError(f"commit failed: {errors}")
        finally:
            consumer.close()

    run_stages("librdkafka", [
        ("CreateTopics", create_topics),
        ("Produce", produce),
        ("consumer group (FindCoordinator, JoinGroup, SyncGroup, Fetch, OffsetCommit)", consume_and_commit),
    ])


def drive_kafka_python(bootstrap: str, idempotence_off: bool) -> None:
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    common = {"bootstrap_servers": [bootstrap], "client_id": CLIENT_KAFKA_PYTHON}

    def create_topics() -> None:
        admin = KafkaAdminClient(**common, request_timeout_ms=15000)
        try:
            admin.create_topics([NewTopic(TOPIC, num_partitions=1, replication_factor=1)], timeout_ms=10000)
        except TopicAlreadyExistsError:
            log("kafka-python: topic already exists (fine: the request was sent)")
        finally:
            admin.close()

    def produce() -> None:
        # kafka-python's own default turns idempotence on (InitProducerId first).
        idempotence = {"enable_idempotence": False} if idempotence_off else {}
        producer = KafkaProducer(
            **common,
            **idempotence,
            acks="all",
            compression_type=None,
            linger_ms=5,
            request_timeout_ms=10000,
            delivery_timeout_ms=20000,
            max_block_ms=20000,
        )
        try:
            futures = [
                producer.send(
                    TOPIC,
                    key=f"key-{i}".encode(),
                    value=f"value-{i}".encode(),
                    headers=[("golden-header", f"header-{i}".encode())],
                    timestamp_ms=TIMESTAMP_MS_BASE + i,
                )
                for i in range(RECORD_COUNT)
            ]
            producer.flush(timeout=30)
            for future in futures:
                future.get(timeout=5)
        finally:
            producer.close(timeout=5)

    def consume_and_commit() -> None:
        consumer = KafkaConsumer(
            **common,
            group_id=GROUP,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=10000,
            heartbeat_interval_ms=1000,
            request_timeout_ms=15000,
        )
        try:
            consumer.subscribe([TOPIC])
            poll_until_assigned(
                lambda: consumer.poll(timeout_ms=500), lambda: bool(consumer.assignment()), "kafka-python"
            )
            # kafka-python 3.0: commit(offsets={TopicPartition: OffsetAndMetadata(offset, metadata,
            # leader_epoch)}); it blocks until the commit succeeds or fails.
            consumer.commit({TopicPartition(TOPIC, 0): OffsetAndMetadata(1, "golden", -1)})
        finally:
            consumer.close(autocommit=False)

    run_stages("kafka-python", [
        ("CreateTopics", create_topics),
        ("Produce", produce),
        ("consumer group (FindCoordinator, JoinGroup, SyncGroup, Fetch, OffsetCommit)", consume_and_commit),
    ])


def poll_until_assigned(poll, is_assigned, who: str, assign_timeout_s: float = 30,
                        fetch_s: float = 3) -> None:
    """Polls until the group assigns a partition, then a little longer so that
    fetches are sent. Both waits are bounded."""
    deadline = time.monotonic() + assign_timeout_s
    while not is_assigned():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{who}: no partition assigned within {assign_timeout_s:.0f}s")
        poll()
    log(f"{who}: assigned; polling {fetch_s:.0f}s for fetches")
    until = time.monotonic() + fetch_s
    while time.monotonic() < until:
        poll()


DRIVERS = {"librdkafka": drive_librdkafka, "kafka-python": drive_kafka_python}


def run_driver(name: str, bootstrap: str, idempotence_off: bool) -> bool:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--drive", name, "--bootstrap", bootstrap]
    if idempotence_off:
        cmd.append("--no-idempotence")
    code, out = run_bounded(cmd, DRIVER_TIMEOUT_S, name)
    for line in out.splitlines():
        print(f"  [{name}] {line}")
    if code != 0:
        log(f"{name}: FAILED (exit code {code})")
        return False
    return True


def run_kcat(bootstrap: str) -> bool:
    """kcat is an extra: a producer and a simple (group-less) consumer."""
    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    if kcat is None:
        log("kcat: not installed, skipped (apt-get install kcat)")
        return False
    base = [kcat, "-b", bootstrap, "-X", f"client.id={CLIENT_KCAT}", "-X", "broker.address.family=v4",
            "-X", "socket.timeout.ms=10000", "-t", TOPIC]
    ok = True
    producer_input = "".join(f"key-{i}:value-{i}\n" for i in range(RECORD_COUNT))
    log("kcat: produce")
    proc = subprocess.Popen(
        base + ["-P", "-p", "0", "-K", ":", "-H", "golden-header=kcat", "-X", "acks=all",
                "-X", "compression.type=none", "-X", "message.timeout.ms=15000"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True, text=True,
    )
    try:
        out, _ = proc.communicate(producer_input, timeout=KCAT_TIMEOUT_S)
        if proc.returncode != 0:
            log(f"kcat: producer exited {proc.returncode}: {out.strip()}")
            ok = False
    except subprocess.TimeoutExpired:
        log(f"kcat: producer timed out after {KCAT_TIMEOUT_S}s, killed")
        ok = False
    finally:
        kill_group(proc, 5)
    log("kcat: consume")
    code, out = run_bounded(base + ["-C", "-p", "0", "-o", "beginning", "-e", "-c", str(RECORD_COUNT), "-q"],
                            KCAT_TIMEOUT_S, "kcat consumer")
    # The capture broker fetches nothing back, so a timeout here is expected
    # if it never reports end-of-partition; the requests are captured anyway.
    if code not in (0, None):
        log(f"kcat: consumer exited {code}: {out.strip()}")
        ok = False
    return ok


# --------------------------------------------------------------------------
# Captured frames.
# --------------------------------------------------------------------------


def api_names_by_key() -> dict[int, str]:
    """API key -> name ("Produce"), read from the schemas in the crate."""
    names: dict[int, str] = {}
    for path in SCHEMAS.glob("*Request.json"):
        text = "\n".join(line for line in path.read_text().splitlines()
                         if not line.lstrip().startswith("//"))
        spec = json.loads(text)
        if spec.get("type") == "request" and "apiKey" in spec:
            names[spec["apiKey"]] = spec["name"].removesuffix("Request")
    return names


def scan(out_dir: Path, names: dict[int, str]) -> dict[str, list[tuple[int, str, int, Path]]]:
    """client_id -> [(sequence, api, version, path)] in the order sent.

    Checks that each file's name agrees with the api key and version in the
    frame's own request header."""
    captured: dict[str, list[tuple[int, str, int, Path]]] = {}
    problems: list[str] = []
    for client_dir in sorted(p for p in out_dir.iterdir() if p.is_dir()):
        frames = []
        for path in client_dir.iterdir():
            match = FRAME_NAME.match(path.name)
            if match is None:
                problems.append(f"unexpected file name {path}")
                continue
            seq, api, version = int(match.group(1)), match.group(2), int(match.group(3))
            head = path.read_bytes()[:4]
            if len(head) < 4:
                problems.append(f"{path}: shorter than a request header")
                continue
            key = int.from_bytes(head[0:2], "big", signed=True)
            header_version = int.from_bytes(head[2:4], "big", signed=True)
            if names.get(key) != api or header_version != version:
                problems.append(f"{path}: header says api key {key} ({names.get(key)}) "
                                f"v{header_version}, file name says {api} v{version}")
            frames.append((seq, api, version, path))
        captured[client_dir.name] = sorted(frames)
    if problems:
        fail("captured frames disagree with their names:\n  " + "\n  ".join(problems))
    return captured


def first_of_each(frames: list[tuple[int, str, int, Path]]) -> dict[tuple[str, int], Path]:
    """One frame per (API, version): the first that names the topic or the
    group, or else the first. (A client's first Metadata request often asks
    for brokers only; the one that names golden-topic says more.)"""
    names = (TOPIC.encode(), GROUP.encode())
    chosen: dict[tuple[str, int], tuple[bool, Path]] = {}
    for _seq, api, version, path in frames:
        named = any(name in path.read_bytes() for name in names)
        best = chosen.get((api, version))
        if best is None or (named and not best[0]):
            chosen[(api, version)] = (named, path)
    return {key: path for key, (_named, path) in chosen.items()}


def report(captured: dict[str, list[tuple[int, str, int, Path]]]) -> list[str]:
    """Prints what was captured, returns the list of missing required APIs."""
    missing: list[str] = []
    log("captured (client: API versions [frames]):")
    for client in sorted(set(captured) | set(REQUIRED_CLIENTS)):
        frames = captured.get(client, [])
        print(f"  {client}: {len(frames)} frame(s)")
        by_api: dict[str, dict[int, int]] = {}
        for _seq, api, version, _path in frames:
            by_api.setdefault(api, {}).setdefault(version, 0)
            by_api[api][version] += 1
        for api in sorted(by_api):
            versions = ", ".join(f"v{v} [{n}]" for v, n in sorted(by_api[api].items()))
            print(f"    {api}: {versions}")
        if client in REQUIRED_CLIENTS:
            for api in REQUIRED_APIS:
                if api not in by_api:
                    missing.append(f"{client}: {api}")
    return missing


def confluent_kafka_versions() -> str:
    import confluent_kafka

    # version() is a (str, int) tuple in older releases and a str in newer ones.
    version = confluent_kafka.version()
    version = version[0] if isinstance(version, tuple) else version
    return f"confluent-kafka {version} (librdkafka {confluent_kafka.libversion()[0]})"


def client_versions() -> dict[str, str]:
    versions = {}
    try:
        versions[CLIENT_LIBRDKAFKA] = confluent_kafka_versions()
    except ImportError:
        pass
    try:
        import kafka

        versions[CLIENT_KAFKA_PYTHON] = f"kafka-python {kafka.__version__}"
    except ImportError:
        pass
    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    if kcat:
        code, out = run_bounded([kcat, "-V"], 10, "kcat -V")
        first = next((line for line in out.splitlines() if "version" in line.lower()), "")
        versions[CLIENT_KCAT] = f"kcat ({first.strip() or 'version unknown'})"
    return versions


def update_fixtures(captured: dict[str, list[tuple[int, str, int, Path]]], clients: list[str]) -> None:
    versions = client_versions()
    today = datetime.date.today().isoformat()
    for client in clients:
        frames = captured.get(client, [])
        if not frames:
            continue
        target = FIXTURES / client
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        firsts = first_of_each(frames)
        for (api, version), path in sorted(firsts.items()):
            shutil.copyfile(path, target / f"{api}-v{version}.bin")
        sequence = "\n".join(f"{seq:03} {api} v{version}" for seq, api, version, _ in frames)
        # Beside the folder, not in it: the Rust tests read every file in it as a frame.
        (FIXTURES / f"{client}.txt").write_text(
            f"client.id: {client}\n"
            f"client: {versions.get(client, 'unknown')}\n"
            f"captured: {today} by protocol/tests/golden/capture.py --update\n"
            f"fixtures: one frame per (API, version), without the 4-byte size prefix: the first\n"
            f"  that names {TOPIC} or {GROUP}, or else the first\n"
            f"\nEvery request sent, in order:\n{sequence}\n"
        )
        log(f"wrote {len(firsts)} fixture(s) to {target.relative_to(REPO)}")


# --------------------------------------------------------------------------


def check_clients() -> None:
    """Imports the client libraries and checks the calls this script makes exist."""
    import inspect

    import kafka
    from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: F401
    from confluent_kafka.admin import AdminClient, NewTopic  # noqa: F401
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, OffsetAndMetadata  # noqa: F401
    from kafka.admin import NewTopic as KafkaPythonNewTopic  # noqa: F401

    params = inspect.signature(KafkaConsumer.commit).parameters
    if "offsets" not in params:
        fail(f"kafka-python KafkaConsumer.commit{inspect.signature(KafkaConsumer.commit)} takes no offsets")
    if "leader_epoch" not in OffsetAndMetadata._fields:
        fail(f"kafka-python OffsetAndMetadata fields are {OffsetAndMetadata._fields}, expected leader_epoch")
    for name in ("enable_idempotence", "delivery_timeout_ms", "max_block_ms"):
        if name not in KafkaProducer.DEFAULT_CONFIG:
            fail(f"kafka-python KafkaProducer has no {name} setting")
    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    log(f"clients ok: {confluent_kafka_versions()}, kafka-python {kafka.__version__}, "
        f"kcat {'at ' + kcat if kcat else 'missing (optional)'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--update", action="store_true",
                        help="rewrite protocol/tests/golden/fixtures/<client_id>/ from this capture")
    parser.add_argument("--keep", action="store_true", help="keep the capture directory")
    parser.add_argument("--skip-kcat", action="store_true", help="do not run kcat")
    parser.add_argument("--no-idempotence", action="store_true",
                        help="turn idempotence off in both producers; by default each client keeps its own "
                             "default (off in librdkafka, on in kafka-python, which then sends InitProducerId)")
    parser.add_argument("--broker-cmd", help="run this broker command instead of building the example; "
                                             "'{out}' in it is replaced by the capture directory")
    parser.add_argument("--check-clients", action="store_true",
                        help="only check that the client libraries import and have the calls used here")
    parser.add_argument("--drive", choices=sorted(DRIVERS), help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.drive:
        DRIVERS[args.drive](args.bootstrap, args.no_idempotence)
        return 0
    if args.check_clients:
        check_clients()
        return 0

    check_clients()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    work = Path(tempfile.mkdtemp(prefix="ferry-golden-"))
    out_dir = work / "frames"
    out_dir.mkdir()
    if args.broker_cmd:
        broker_cmd = ["sh", "-c", args.broker_cmd.replace("{out}", str(out_dir))]
    else:
        build = ["cargo", "build", "-q", "-p", "ferry-protocol", "--example", "capture_broker"]
        log(f"building: {' '.join(build)} (at most {BUILD_TIMEOUT_S}s)")
        code, out = run_bounded(build, BUILD_TIMEOUT_S, "cargo build", cwd=REPO)
        if code != 0:
            print(out, file=sys.stderr)
            fail("building the capture_broker example failed")
        broker_cmd = ["cargo", "run", "-q", "-p", "ferry-protocol", "--example", "capture_broker",
                      "--", "--listen", "127.0.0.1:0", "--out", str(out_dir)]

    broker = Broker(broker_cmd, work / "broker.stderr.log")
    try:
        bootstrap = broker.start(BROKER_START_TIMEOUT_S)
        results = {name: run_driver(name, bootstrap, args.no_idempotence) for name in DRIVERS}
        kcat_ok = False if args.skip_kcat else run_kcat(bootstrap)
        if not broker.alive():
            fail(f"the broker died during the capture; stderr:\n{tail(broker.log_path)}")
    finally:
        broker.stop()

    captured = scan(out_dir, api_names_by_key())
    missing = report(captured)
    failed = [name for name, good in results.items() if not good]
    if not args.skip_kcat and not kcat_ok:
        log("warning: kcat did not finish cleanly (optional; its frames are still listed above)")
    if failed:
        log(f"client driver(s) failed: {', '.join(failed)}")
    if missing:
        log("missing required APIs:\n  " + "\n  ".join(missing))
    ok = not missing and not failed
    if ok and args.update:
        update_fixtures(captured, [*REQUIRED_CLIENTS] + ([CLIENT_KCAT] if kcat_ok else []))
    elif args.update:
        log("fixtures NOT updated, because the capture is incomplete")

    if args.keep or not ok:
        log(f"capture directory kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    log("OK: every required API captured" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
