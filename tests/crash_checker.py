"""Crash checker: an acks=all producer runs while the node is killed with
kill -9 and restarted; afterwards every acknowledged record must be readable
once, at its acknowledged offset, and offsets must be dense.

Usage: crash_checker.py --ferry PATH --dir DIR [--kills 3] [--seconds 20]
                        [--store dir|moto|s3s] [--producer idempotent|plain]

--store dir (the default) starts `PATH dev --dir DIR --port PORT`, a
local-directory bucket; moto and s3s start that S3-protocol server on a free
port and run `PATH node --config FILE` on it (batchInterval=50), so what
survives a kill is exactly what reached the bucket.

--producer idempotent (the default) must never see a fatal error (such as
OUT_OF_ORDER_SEQUENCE_NUMBER after a restart, which a node that forgot its
acknowledged batches causes) and no record may be duplicated. A plain
producer may write a record twice when an acknowledgement is lost in a
kill (Kafka's at-least-once); its every acknowledged record must still be
at its offset, and nothing acknowledged may hold another record.
--faults runs the node's bucket through the S3 model (a local directory,
`ferry node`): a long PUT/GET tail (p99.9 1.5 s), 1% 503 SlowDown, 0.5%
500s and 0.5% stalled requests that never answer, with hedging on. Then
also: no produce may fail (librdkafka retries retriable errors; a delivery
error means one was not), and the node's WAL bytes in flight
(`ferry_wal_inflight_bytes`, sampled from /metrics) and its resident memory
stay under their bounds.

It prints a summary and exits non-zero on any violation.
"""
import argparse
import os
import re
import urllib.request
import random
import signal
import subprocess
import sys
import threading
import time
from harness import S3Server, free_port, wait_port

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

TOPIC = "crash"
PARTITIONS = 3
# The fault model of --faults (see wal/src/store.rs and perf/s3-model.md).
FAULTS = ("&putLatencyP50Ms=20&putLatencyP99Ms=150&putLatencyP999Ms=1500"
          "&getLatencyP50Ms=10&getLatencyP99Ms=80&getLatencyP999Ms=1500"
          "&slowDownRate=0.01&serverErrorRate=0.005&stallRate=0.005")
# The node's WAL in-flight bound (WAL_INFLIGHT_BYTES_MAX in node/src/main.rs)
# and the resident memory it may reach with it.
INFLIGHT_BYTES_MAX = 256 << 20
RSS_BYTES_MAX = 1 << 30


class Node:
    def __init__(self, cmd, port, log):
        self.cmd = cmd
        self.port = port
        self.log = log
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=self.log)
        if not wait_port(self.port):
            raise SystemExit(f"FAIL: node did not listen on {self.port} within 30 s")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ferry", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--store", choices=["dir", "moto", "s3s"], default="dir")
    ap.add_argument("--producer", choices=["idempotent", "plain"], default="idempotent")
    ap.add_argument("--faults", action="store_true")
    args = ap.parse_args()
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    log = open(os.path.join(args.dir, "node.log"), "ab")
    s3 = None
    args.metrics = None
    try:
        if args.faults:
            if args.store != "dir":
                raise SystemExit("--faults runs on the local directory (--store dir)")
            args.metrics = free_port()
            data = os.path.join(args.dir, "data")
            conf = os.path.join(args.dir, "server.properties")
            with open(conf, "w") as f:
                f.write(f"node.id=1\nlisteners=PLAINTEXT://127.0.0.1:{port}\n"
                        f"ferry.metrics.listener=127.0.0.1:{args.metrics}\n"
                        f"s3.data.buckets=0@file://{data}\n"
                        f"s3.wal.path=0@file://{data}?batchInterval=50{FAULTS}\n")
            cmd = [args.ferry, "node", "--config", conf]
        elif args.store == "dir":
            cmd = [args.ferry, "dev", "--dir", os.path.join(args.dir, "data"), "--port", str(port)]
        else:
            s3 = S3Server(args.store, args.dir, "ferry-crash")
            conf = os.path.join(args.dir, "server.properties")
            with open(conf, "w") as f:
                f.write(f"node.id=1\nlisteners=PLAINTEXT://127.0.0.1:{port}\n"
                        f"s3.data.buckets=0@{s3.uri()}\n"
                        f"s3.wal.path=0@{s3.uri('&batchInterval=50')}\n")
            cmd = [args.ferry, "node", "--config", conf]
        print(f"store {args.store}{' with S3 faults' if args.faults else ''}, "
              f"{args.producer} producer", flush=True)
        node = Node(cmd, port, log)
        node.start()
        try:
            run(node, bootstrap, args)
        finally:
            node.stop()
    finally:
        if s3 is not None:
            s3.stop()


def run(node, bootstrap, args):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for _, f in admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)]).items():
        f.result(timeout=20)

    acked = {}  # value -> (partition, offset)
    failed = []
    fatal = []
    lock = threading.Lock()
    idempotent = args.producer == "idempotent"

    def on_error(err):
        if err.fatal():
            with lock:
                fatal.append(str(err))

    def on_delivery(err, msg):
        with lock:
            if err is not None:
                failed.append(msg.value())
            else:
                acked[msg.value()] = (msg.partition(), msg.offset())

    producer = Producer({
        "bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": idempotent,
        "linger.ms": 5, "message.timeout.ms": 60000, "reconnect.backoff.max.ms": 500,
        "error_cb": on_error,
    })
    stop = threading.Event()

    def produce_loop():
        i = 0
        while not stop.is_set():
            try:
                producer.produce(TOPIC, value=f"rec-{i:08d}".encode(), partition=i % PARTITIONS,
                                 on_delivery=on_delivery)
                i += 1
            except BufferError:
                pass
            producer.poll(0.001)

    # A daemon, so a failure never leaves the script waiting for it.
    t = threading.Thread(target=produce_loop, daemon=True)
    t.start()
    memory = {"inflight": 0, "rss": 0, "samples": 0}
    if args.metrics:
        threading.Thread(target=watch_memory, args=(node, args.metrics, stop, memory),
                         daemon=True).start()
    rng = random.Random(42)
    per_kill = args.seconds / (args.kills + 1)
    for k in range(args.kills):
        time.sleep(per_kill * (0.5 + rng.random()))
        with lock:
            before = len(acked)
        node.kill9()
        print(f"kill -9 #{k + 1} after {before} acknowledgements", flush=True)
        time.sleep(0.5)
        node.start()
    time.sleep(per_kill)
    stop.set()
    t.join(timeout=30)
    left = producer.flush(90)
    print(f"acknowledged {len(acked)}, failed {len(failed)}, unflushed {left}", flush=True)
    if fatal:
        raise SystemExit(f"FAIL: the producer saw a fatal error: {fatal[0]}")
    if args.faults:
        print(f"memory: WAL in flight at most {memory['inflight']} B (bound {INFLIGHT_BYTES_MAX}), "
              f"resident at most {memory['rss'] >> 20} MiB (bound {RSS_BYTES_MAX >> 20} MiB), "
              f"{memory['samples']} samples", flush=True)
        print_s3_counters(args.metrics)
        if failed:
            raise SystemExit(f"FAIL: {len(failed)} records failed to deliver on a faulty bucket")
        if memory["samples"] == 0:
            raise SystemExit("FAIL: no /metrics sample was read")
        if memory["inflight"] > INFLIGHT_BYTES_MAX or memory["rss"] > RSS_BYTES_MAX:
            raise SystemExit("FAIL: memory passed its bound")
    if not acked:
        raise SystemExit("FAIL: nothing was acknowledged")

    # Read everything back.
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "crash-check",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                  "enable.partition.eof": True})
    c.assign([TopicPartition(TOPIC, p, 0) for p in range(PARTITIONS)])
    found = {}  # (partition, offset) -> value
    eof = set()
    end = time.time() + 120
    while len(eof) < PARTITIONS and time.time() < end:
        m = c.poll(1.0)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                eof.add(m.partition())
                continue
            raise SystemExit(f"FAIL: consume error {m.error()}")
        found[(m.partition(), m.offset())] = m.value()
    c.close()
    problems = []
    for value, (p, o) in acked.items():
        if found.get((p, o)) != value:
            problems.append(f"acknowledged {value!r} at {p}/{o}, found {found.get((p, o))!r}")
    for p in range(PARTITIONS):
        offs = sorted(o for (pp, o) in found if pp == p)
        if offs != list(range(len(offs))):
            problems.append(f"partition {p}: offsets are not dense from 0")
    values = list(found.values())
    dupes = len(values) - len(set(values))
    if dupes and idempotent:
        problems.append(f"{dupes} duplicated records")
    elif dupes:
        print(f"{dupes} records written twice (a plain producer's retries)", flush=True)
    print(f"read back {len(found)} records from {PARTITIONS} partitions", flush=True)
    for pr in problems[:20]:
        print("FAIL:", pr, flush=True)
    if problems:
        raise SystemExit(1)
    print(f"OK: {len(acked)} acknowledged records survived {args.kills} kill -9 "
          f"({args.store}, {args.producer}), each at its offset, offsets dense", flush=True)


def metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        return r.read().decode()


def metric(text, name):
    m = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def watch_memory(node, port, stop, memory):
    """Samples the WAL's bytes in flight and the node's resident memory."""
    while not stop.is_set():
        try:
            v = metric(metrics(port), "ferry_wal_inflight_bytes")
            with open(f"/proc/{node.proc.pid}/status") as f:
                rss = int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1)) * 1024
            if v is not None:
                memory["inflight"] = max(memory["inflight"], int(v))
                memory["rss"] = max(memory["rss"], rss)
                memory["samples"] += 1
        except (OSError, AttributeError, ValueError):
            pass  # the node is between a kill and its restart
        time.sleep(0.2)


def print_s3_counters(port):
    try:
        text = metrics(port)
    except OSError as e:
        print(f"no /metrics: {e}", flush=True)
        return
    names = ["ferry_s3_puts_total", "ferry_s3_put_errors_total", "ferry_s3_hedges_total",
             "ferry_s3_hedges_won_total", "ferry_s3_timeouts_total", "ferry_s3_throttles_total",
             "ferry_s3_retries_total", "ferry_s3_put_limit"]
    print("since the last restart: " + ", ".join(
        f"{n.removeprefix('ferry_s3_')} {metric(text, n):g}" for n in names
        if metric(text, n) is not None), flush=True)


if __name__ == "__main__":
    main()
