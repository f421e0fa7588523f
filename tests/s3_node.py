"""A Ferry node on a real S3-protocol server (moto or s3s-fs), with real
clients: produce, kill -9, restart, read everything back from the bucket.

Usage: s3_node.py --ferry PATH --dir DIR [--server moto|s3s]
                  [--tls-cert PEM --tls-key PEM --ca PEM]
Starts the S3 server on a free port, creates the bucket, writes a
server.properties that points s3.data.buckets and s3.wal.path at it, and
runs `PATH node --config FILE`. With --tls-cert, the node reaches the
server through an https front with that certificate (from a private CA):
first without `caFile`, when it must not come up (it cannot verify the
bucket, so it cannot recover), then with `caFile=CA`. Exits non-zero on any
failure.
"""
import argparse
import os
import signal
import subprocess
import sys
import time
from harness import S3_SECRET_KEY, S3Server, free_port, wait_port
from tls_proxy import TlsProxy

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

BUCKET = "ferry-test"


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ferry", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--server", choices=["moto", "s3s"], default="moto")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--ca")
    args = ap.parse_args()
    s3 = S3Server(args.server, args.dir, BUCKET)
    proc = None
    proxy = None
    try:
        kport = free_port()
        uri = s3.uri()
        if args.tls_cert:
            proxy = TlsProxy(args.tls_cert, args.tls_key, s3.port)
            uri = uri.replace(s3.endpoint, f"https://127.0.0.1:{proxy.port}")
            untrusting = os.path.join(args.dir, "untrusting.properties")
            with open(untrusting, "w") as f:
                f.write(f"node.id=3\nlisteners=PLAINTEXT://127.0.0.1:{kport}\n"
                        f"s3.data.buckets=0@{uri}\n")
            with open(os.path.join(args.dir, "untrusting.log"), "ab") as log:
                p = subprocess.Popen([args.ferry, "node", "--config", untrusting], stdout=log, stderr=log)
                came_up = wait_port(kport, deadline_s=8)
                p.kill()
                p.wait(timeout=10)
            if came_up:
                fail("a node that cannot verify the https endpoint's certificate came up")
            print("without caFile the node does not come up (the bucket's certificate does not verify)",
                  flush=True)
            uri += f"&caFile={args.ca}"
        conf = os.path.join(args.dir, "server.properties")
        with open(conf, "w") as f:
            f.write(f"node.id=3\nlisteners=PLAINTEXT://127.0.0.1:{kport}\n"
                    f"s3.data.buckets=0@{uri}\ns3.wal.path=0@{uri}&batchInterval=100\n"
                    f"num.partitions=3\n")
        log_path = os.path.join(args.dir, "node.log")
        log = open(log_path, "ab")

        def start():
            p = subprocess.Popen([args.ferry, "node", "--config", conf], stdout=log, stderr=log)
            if not wait_port(kport):
                fail(f"node did not listen; see {log_path}")
            return p

        proc = start()
        bootstrap = f"127.0.0.1:{kport}"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for _, fut in admin.create_topics([NewTopic("s3-topic", 3, 1)]).items():
            fut.result(timeout=20)
        acked = {}

        def on_delivery(err, msg):
            if err is None:
                acked[msg.value()] = (msg.partition(), msg.offset())

        p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                      "compression.type": "lz4"})
        for i in range(300):
            p.produce("s3-topic", value=f"s3-{i}".encode(), partition=i % 3, on_delivery=on_delivery)
        if p.flush(60) or len(acked) != 300:
            fail(f"acknowledged {len(acked)} of 300")
        print("acknowledged 300 through S3", flush=True)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        proc = start()
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "s3-check", "enable.auto.commit": False})
        c.assign([TopicPartition("s3-topic", part, 0) for part in range(3)])
        found = {}
        end = time.time() + 60
        while len(found) < 300 and time.time() < end:
            m = c.poll(1.0)
            if m is None or m.error():
                continue
            found[m.value()] = (m.partition(), m.offset())
        c.close()
        if found != acked:
            missing = [v for v in acked if found.get(v) != acked[v]]
            fail(f"{len(missing)} acknowledged records not at their offsets after kill -9, e.g. {missing[:3]}")
        with open(log_path, "rb") as f:
            if S3_SECRET_KEY.encode() in f.read():
                fail("the secret key appears in the node's log")
        objects = s3.client().list_objects_v2(Bucket=BUCKET).get("KeyCount", 0)
        print(f"OK: 300 records survived kill -9 on {args.server} ({objects} objects in the bucket)",
              flush=True)
    finally:
        if proc and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        if proxy:
            proxy.stop()
        s3.stop()


if __name__ == "__main__":
    main()
