"""Crash checker: acks=all producers run while the node is killed with
kill -9 and restarted; afterwards every acknowledged record must be readable
at its acknowledged offset, offsets must be dense, and nothing may be
duplicated.

Usage: crash_checker.py --ferry PATH --dir DIR [--kills 3] [--seconds 20]
The node is started as `PATH dev --dir DIR --port PORT` (a local-directory
bucket), so what survives a kill is exactly what reached the bucket.
It prints a summary and exits non-zero on any violation.
"""
import argparse
import os
import random
import signal
import subprocess
import sys
import threading
import time
from harness import free_port, wait_port

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

TOPIC = "crash"
PARTITIONS = 3


class Node:
    def __init__(self, ferry, data_dir, port, log):
        self.cmd = [ferry, "dev", "--dir", data_dir, "--port", str(port)]
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
    args = ap.parse_args()
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    log = open(os.path.join(args.dir, "node.log"), "ab")
    node = Node(args.ferry, os.path.join(args.dir, "data"), port, log)
    node.start()
    try:
        run(node, bootstrap, args)
    finally:
        node.stop()


def run(node, bootstrap, args):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for _, f in admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)]).items():
        f.result(timeout=20)

    acked = {}  # value -> (partition, offset)
    failed = []
    lock = threading.Lock()

    def on_delivery(err, msg):
        with lock:
            if err is not None:
                failed.append(msg.value())
            else:
                acked[msg.value()] = (msg.partition(), msg.offset())

    producer = Producer({
        "bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
        "linger.ms": 5, "message.timeout.ms": 60000, "reconnect.backoff.max.ms": 500,
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

    t = threading.Thread(target=produce_loop)
    t.start()
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
    if dupes:
        problems.append(f"{dupes} duplicated records")
    print(f"read back {len(found)} records from {PARTITIONS} partitions", flush=True)
    for pr in problems[:20]:
        print("FAIL:", pr, flush=True)
    if problems:
        raise SystemExit(1)
    print(f"OK: {len(acked)} acknowledged records survived {args.kills} kill -9, "
          f"offsets dense, no duplicates", flush=True)


if __name__ == "__main__":
    main()
