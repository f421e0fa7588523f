"""Clients that run INSIDE a zone's (or the services') namespace, started by
the harness with `ip netns exec NS python3 zclient.py ...`.

    zclient.py agent
        Reads one JSON command per line on stdin and answers one JSON line
        on stdout. It keeps its Kafka connections open between commands, so
        "the same client, no restart" is literal. Commands (field "cmd"):
          wait_tcp {addrs: ["ip:port"...], timeout}  -> {ok, missing}
          s3_bucket {endpoint, bucket}               -> {ok}
          metadata {addr, client_id, topics|null, conn, source} -> {brokers, topics}
          metadata_loop {..., count}                 -> {..., loop_bytes}
          find_coordinator {addr, client_id, group}  -> {node_id, error_code}
          create_topic {addr, topic, partitions}     -> {error_code}
          alter_cidr {addr, value, resource_name}    -> {error_code, error_message}
          describe_config {addr, key}                -> {value, error_code}
          close {conn}                               -> {ok}
    zclient.py produce ...   (confluent-kafka producer; acks to a file)
    zclient.py consume ...   (confluent-kafka consumer; records to a file)

Raw requests use classic (non-flexible) versions: Metadata v1, CreateTopics
v2, IncrementalAlterConfigs v0 (resource type 4 = broker, name "" = the
cluster defaults, which both admin clients refuse to send), DescribeConfigs v0.
"""
import argparse
import json
import socket
import struct
import sys
import time


# ---------------------------------------------------------------- wire ----

def _str(s):
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def _arr(items, enc):
    if items is None:
        return struct.pack(">i", -1)
    return struct.pack(">i", len(items)) + b"".join(enc(i) for i in items)


class Reader:
    def __init__(self, b):
        self.b = b
        self.o = 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.b, self.o)
        self.o += struct.calcsize(fmt)
        return v[0]

    def i8(self):
        return self.take(">b")

    def i16(self):
        return self.take(">h")

    def i32(self):
        return self.take(">i")

    def boolean(self):
        return self.take(">?")

    def string(self):
        n = self.i16()
        if n < 0:
            return None
        s = self.b[self.o:self.o + n].decode()
        self.o += n
        return s

    def array(self, f):
        n = self.i32()
        return [] if n < 0 else [f() for _ in range(n)]


class Conn:
    """One blocking connection speaking request header v1."""

    def __init__(self, addr, client_id, timeout=10.0, source=None):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.client_id = client_id
        self.corr = 0
        self.bytes = 0  # request and response frames, size prefixes included

    def call(self, api, version, body):
        self.corr += 1
        header = struct.pack(">hhi", api, version, self.corr) + _str(self.client_id)
        frame = header + body
        self.sock.sendall(struct.pack(">i", len(frame)) + frame)
        size = struct.unpack(">i", self._read(4))[0]
        resp = self._read(size)
        self.bytes += 8 + len(frame) + size
        corr = struct.unpack_from(">i", resp)[0]
        if corr != self.corr:
            raise IOError(f"correlation id {corr}, expected {self.corr}")
        return Reader(resp[4:])

    def _read(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise IOError("connection closed by the node")
            buf += chunk
        return buf

    def close(self):
        self.sock.close()


def metadata(conn, topics):
    r = conn.call(3, 1, _arr(topics, _str))
    brokers = r.array(lambda: {"id": r.i32(), "host": r.string(), "port": r.i32(), "rack": r.string()})
    r.i32()  # controller

    def partition():
        p = {"error": r.i16(), "partition": r.i32(), "leader": r.i32()}
        p["replicas"] = r.array(r.i32)
        p["isr"] = r.array(r.i32)
        return p

    def topic():
        t = {"error": r.i16(), "name": r.string(), "internal": r.boolean()}
        t["partitions"] = sorted(r.array(partition), key=lambda p: p["partition"])
        return t
    return {"brokers": sorted(brokers, key=lambda b: b["id"]), "topics": r.array(topic)}


def find_coordinator(conn, group):
    r = conn.call(10, 1, _str(group) + struct.pack(">b", 0))
    r.i32()
    return {"error_code": r.i16(), "error_message": r.string(), "node_id": r.i32(),
            "host": r.string(), "port": r.i32()}


def create_topic(conn, topic, partitions):
    """CreateTopics v2 (Ferry starts at v2); returns the error code."""
    body = _arr([topic], lambda t: _str(t) + struct.pack(">ih", partitions, 1)
                + _arr([], None) + _arr([], None)) + struct.pack(">i?", 20000, False)
    r = conn.call(19, 2, body)
    r.i32()
    res = r.array(lambda: (r.string(), r.i16(), r.string()))
    return res[0][1]


def alter_cidr(conn, value, resource_name=""):
    cfg = _str("automq.zone.cidr.blocks") + struct.pack(">b", 0) + _str(value)
    res = struct.pack(">b", 4) + _str(resource_name) + _arr([cfg], lambda c: c)
    body = _arr([res], lambda x: x) + struct.pack(">?", False)
    r = conn.call(44, 0, body)
    r.i32()
    out = r.array(lambda: {"error_code": r.i16(), "error_message": r.string(),
                           "type": r.i8(), "name": r.string()})
    return out[0]


def describe_config(conn, key, resource_name=""):
    res = struct.pack(">b", 4) + _str(resource_name) + _arr([key], _str)
    r = conn.call(32, 0, _arr([res], lambda x: x))
    r.i32()

    def config():
        return {"name": r.string(), "value": r.string(), "read_only": r.boolean(),
                "is_default": r.boolean(), "sensitive": r.boolean()}

    def result():
        return {"error_code": r.i16(), "error_message": r.string(), "type": r.i8(),
                "name": r.string(), "configs": r.array(config)}
    out = r.array(result)[0]
    val = next((c["value"] for c in out["configs"] if c["name"] == key), None)
    return {"error_code": out["error_code"], "error_message": out["error_message"], "value": val}


# --------------------------------------------------------------- agent ----

def agent():
    conns = {}

    def conn(addr, client_id, key, source=None):
        k = (key or "default", addr, client_id)
        if k not in conns:
            conns[k] = Conn(addr, client_id, source=source)
        return conns[k]

    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        try:
            out = handle(req, conn, conns)
        except Exception as e:  # reported to the harness, which decides
            for k in [k for k in conns if k[1] == req.get("addr")]:
                try:
                    conns.pop(k).close()
                except OSError:
                    pass
            out = {"error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


def handle(req, conn, conns):
    cmd = req["cmd"]
    if cmd == "wait_tcp":
        end = time.time() + req.get("timeout", 30)
        missing = list(req["addrs"])
        while missing and time.time() < end:
            still = []
            for a in missing:
                host, port = a.rsplit(":", 1)
                try:
                    socket.create_connection((host, int(port)), timeout=0.5).close()
                except OSError:
                    still.append(a)
            missing = still
            if missing:
                time.sleep(0.1)
        return {"ok": not missing, "missing": missing}
    if cmd == "s3_bucket":
        import boto3
        c = boto3.client("s3", endpoint_url=req["endpoint"], region_name="us-east-1",
                         aws_access_key_id="test", aws_secret_access_key="test")
        c.create_bucket(Bucket=req["bucket"])
        return {"ok": True}
    if cmd == "s3_count":
        import boto3
        c = boto3.client("s3", endpoint_url=req["endpoint"], region_name="us-east-1",
                         aws_access_key_id="test", aws_secret_access_key="test")
        n = 0
        size = 0
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=req["bucket"]):
            for o in page.get("Contents", []):
                n += 1
                size += o["Size"]
        return {"objects": n, "bytes": size}
    c = conn(req["addr"], req.get("client_id", "ferry-zones-admin"), req.get("conn"), req.get("source"))
    if cmd == "metadata":
        out = metadata(c, req.get("topics"))
        out["conn_bytes"] = c.bytes
        return out
    if cmd == "metadata_loop":
        # `count` Metadata requests on one connection; the bytes they moved.
        before = c.bytes
        for _ in range(req["count"]):
            out = metadata(c, req.get("topics"))
        out["loop_bytes"] = c.bytes - before
        return out
    if cmd == "find_coordinator":
        return find_coordinator(c, req["group"])
    if cmd == "create_topic":
        return {"error_code": create_topic(c, req["topic"], req["partitions"])}
    if cmd == "alter_cidr":
        return alter_cidr(c, req["value"], req.get("resource_name", ""))
    if cmd == "describe_config":
        return describe_config(c, req["key"], req.get("resource_name", ""))
    if cmd == "close":
        for k in [k for k in conns if k[0] == req.get("conn")]:
            conns.pop(k).close()
        return {"ok": True}
    raise ValueError(f"unknown command {cmd}")


# ------------------------------------------------------------ producer ----

def produce(args):
    """Produces keys "<tag>-<seq>" (value: the key, padded to --size bytes)
    round-robin over --partitions (or by key with --by-key), at --rate
    records/s (0: as fast as the client allows) until --count records or
    --seconds; then flushes for at most --flush-timeout. Every delivery
    report goes to --acks as one JSON line: [partition, offset, key] for an
    ack, or {"err": name, "key": key}. Prints a JSON summary."""
    from confluent_kafka import KafkaException, Producer
    conf = {"bootstrap.servers": args.bootstrap, "client.id": args.client_id,
            "acks": "all", "enable.idempotence": True, "linger.ms": args.linger_ms,
            "message.timeout.ms": args.message_timeout_ms,
            "socket.connection.setup.timeout.ms": 5000,
            "topic.metadata.refresh.interval.ms": 2000,
            "queue.buffering.max.kbytes": 65536}
    if args.debug:
        # What the idempotent producer decided (epoch bumps, drains, retries)
        # lands in the producer's log beside the acks.
        conf["debug"] = args.debug
    p = Producer(conf)
    out = open(args.acks, "w")
    stats = {"fatal": None, "acked": 0, "failed": 0, "errors": {}, "sent": 0, "payload_bytes_acked": 0}

    def report(err, msg):
        key = msg.key().decode()
        if err is None:
            stats["acked"] += 1
            stats["payload_bytes_acked"] += len(msg.key()) + len(msg.value())
            out.write(json.dumps([msg.partition(), msg.offset(), key, time.time()]) + "\n")
        else:
            stats["failed"] += 1
            name = err.name()
            if err.fatal():
                stats["fatal"] = stats.get("fatal") or str(err)
            stats["errors"][name] = stats["errors"].get(name, 0) + 1
            out.write(json.dumps({"err": name, "key": key, "t": time.time()}) + "\n")

    parts = [int(x) for x in args.partitions.split(",")] if args.partitions else None
    start = time.time()
    i = 0
    def loop():
        nonlocal i
        while True:
            if args.count and i >= args.count:
                return
            if args.seconds and time.time() - start >= args.seconds:
                return
            if args.rate:
                due = start + i / args.rate
                while time.time() < due:
                    p.poll(min(0.05, max(0.0, due - time.time())))
            key = f"{args.tag}-{i:08d}"
            value = (key + "|").encode().ljust(args.size, b"x")
            kw = {}
            if parts:
                kw["partition"] = parts[i % len(parts)]
            while True:
                try:
                    p.produce(args.topic, key=key.encode(), value=value, on_delivery=report, **kw)
                    break
                except BufferError:
                    p.poll(0.1)
            i += 1
            stats["sent"] = i
            p.poll(0)

    try:
        loop()
    except KafkaException as e:
        # A fatal error (e.g. OUT_OF_ORDER_SEQUENCE_NUMBER for an idempotent
        # producer) ends the producer; the harness reports it.
        stats["fatal"] = stats.get("fatal") or str(e.args[0])
    try:
        left = p.flush(args.flush_timeout)
    except KafkaException as e:
        stats["fatal"] = stats.get("fatal") or str(e.args[0])
        left = len(p)
    out.close()
    stats["unflushed"] = left
    stats["seconds"] = round(time.time() - start, 2)
    print(json.dumps(stats), flush=True)


# ------------------------------------------------------------ consumer ----

def consume(args):
    """Reads --partitions of --topic from offset 0 (assign, no group) until
    every partition has reached its target offset (--targets p:off,...; the
    end offset seen at start when absent) and the end of the log, or until
    --timeout. Writes [partition, offset, key] lines to --out and prints a
    JSON summary."""
    from confluent_kafka import Consumer, TopicPartition, KafkaError
    conf = {"bootstrap.servers": args.bootstrap, "client.id": args.client_id,
            "client.rack": args.rack, "group.id": args.group, "enable.auto.commit": False,
            "enable.partition.eof": True, "auto.offset.reset": "earliest",
            "socket.connection.setup.timeout.ms": 5000,
            "topic.metadata.refresh.interval.ms": 2000}
    if args.subscribe:
        conf["enable.auto.commit"] = True
        conf["auto.commit.interval.ms"] = 500
    c = Consumer(conf)
    parts = [int(x) for x in args.partitions.split(",")]
    targets = {}
    if args.targets:
        for kv in args.targets.split(","):
            if kv:
                p, o = kv.split(":")
                targets[int(p)] = int(o)
    end = time.time() + args.timeout
    if args.subscribe:
        c.subscribe([args.topic])
    else:
        c.assign([TopicPartition(args.topic, p, 0) for p in parts])
    out = open(args.out, "w")
    pos = {p: 0 for p in parts}
    eof = set()
    errors = {}
    n = 0
    while time.time() < end:
        if all(p in eof and pos[p] >= targets.get(p, 0) for p in parts):
            break
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                eof.add(m.partition())
                pos[m.partition()] = max(pos[m.partition()], m.offset())
            else:
                name = m.error().name()
                errors[name] = errors.get(name, 0) + 1
            continue
        eof.discard(m.partition())
        pos[m.partition()] = m.offset() + 1
        out.write(json.dumps([m.partition(), m.offset(), (m.key() or b"").decode()]) + "\n")
        n += 1
    out.close()
    committed = {}
    if args.subscribe:
        try:
            c.commit(asynchronous=False)
        except Exception as e:
            errors[f"commit: {e}"] = 1
        try:
            for tp in c.committed([TopicPartition(args.topic, p) for p in parts], timeout=5):
                committed[tp.partition] = tp.offset
        except Exception as e:
            errors[f"committed: {e}"] = 1
    c.close()
    done = all(p in eof and pos[p] >= targets.get(p, 0) for p in parts)
    print(json.dumps({"records": n, "done": done, "positions": pos, "errors": errors,
                      "committed": committed}), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("agent")
    p = sub.add_parser("produce")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--client-id", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--tag", required=True)
    p.add_argument("--acks", required=True)
    p.add_argument("--partitions", default="")
    p.add_argument("--count", type=int, default=0)
    p.add_argument("--seconds", type=float, default=0)
    p.add_argument("--rate", type=float, default=0)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--linger-ms", type=int, default=20)
    p.add_argument("--message-timeout-ms", type=int, default=30000)
    p.add_argument("--flush-timeout", type=float, default=40)
    p.add_argument("--debug", default="", help="librdkafka debug contexts (to stderr), e.g. eos")
    c = sub.add_parser("consume")
    c.add_argument("--bootstrap", required=True)
    c.add_argument("--client-id", required=True)
    c.add_argument("--rack", default="")
    c.add_argument("--group", required=True)
    c.add_argument("--topic", required=True)
    c.add_argument("--partitions", required=True)
    c.add_argument("--targets", default="")
    c.add_argument("--out", required=True)
    c.add_argument("--timeout", type=float, default=60)
    c.add_argument("--subscribe", action="store_true")
    args = ap.parse_args()
    if args.cmd == "agent":
        agent()
    elif args.cmd == "produce":
        produce(args)
    else:
        consume(args)


if __name__ == "__main__":
    main()
