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
          list_offsets {addr, topic, partitions}     -> {offsets: {p: end}, errors}
          probe {addr, tls, sasl, frame, timeout}    -> what a fresh connection met
          close {conn}                               -> {ok}
        Any command with an addr may carry "tls" ({ca, cert, key}: TLS,
        the node's certificate checked against ca and its IP address, and a
        client certificate when cert is given) and "sasl" ({mechanism,
        user, password}: SaslHandshake v1 + SaslAuthenticate v1 before the
        first request, SCRAM-SHA-512/256 or PLAIN); the agent's connections
        are kept per (conn, addr, client_id, tls, sasl).
    zclient.py produce ...   (confluent-kafka producer; acks to a file)
    zclient.py consume ...   (confluent-kafka consumer; records to a file)
    zclient.py admin ...     (confluent-kafka AdminClient: SCRAM users, ACLs)
    zclient.py auth-probe ...  (what a confluent-kafka client with given
                               settings meets: its error callbacks)
    produce, consume, admin and auth-probe take --conf-json FILE: librdkafka
    settings (security.protocol, sasl.*, ssl.*) merged over their own.

Raw requests use classic (non-flexible) versions: Metadata v1, CreateTopics
v2, IncrementalAlterConfigs v0 (resource type 4 = broker, name "" = the
cluster defaults, which both admin clients refuse to send), DescribeConfigs v0,
ListOffsets v1, SaslHandshake v1, SaslAuthenticate v1, and Ferry's
node-to-node HandoffCommit v0 (API key 32000, header without client id).
"""
import argparse
import base64
import hashlib
import hmac
import json
import os
import socket
import ssl
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


class AuthError(Exception):
    """SASL refused: the node's error code and message."""

    def __init__(self, code, message):
        super().__init__(f"SASL error {code}: {message}")
        self.code = code
        self.message = message


def tls_wrap(sock, host, tls):
    """The socket in TLS: the node's certificate must chain to tls["ca"] and
    name `host` (an IP address, checked against its subjectAltName); with
    tls["cert"] and tls["key"], a client certificate is presented."""
    ctx = ssl.create_default_context(cafile=tls["ca"])
    if tls.get("cert"):
        ctx.load_cert_chain(tls["cert"], tls["key"])
    return ctx.wrap_socket(sock, server_hostname=host)


class Conn:
    """One blocking connection speaking request header v1, over TLS when
    `tls` is given, SASL-authenticated first when `sasl` is."""

    def __init__(self, addr, client_id, timeout=10.0, source=None, tls=None, sasl=None):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        if tls:
            try:
                self.sock = tls_wrap(self.sock, host, tls)
            except BaseException:
                self.sock.close()
                raise
        self.client_id = client_id
        self.corr = 0
        self.bytes = 0  # request and response frames, size prefixes included
        self.session_lifetime_ms = None
        if sasl:
            try:
                sasl_login(self, sasl)
            except BaseException:
                self.sock.close()
                raise

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


def _bytes(b):
    return struct.pack(">i", len(b)) + b


def _b64(b):
    return base64.b64encode(b).decode()


def sasl_handshake(conn, mechanism):
    r = conn.call(17, 1, _str(mechanism))
    code = r.i16()
    mechanisms = r.array(r.string)
    if code != 0:
        raise AuthError(code, f"SaslHandshake({mechanism}) refused; the node offers {mechanisms}")


def sasl_authenticate(conn, token):
    """SaslAuthenticate v1: the mechanism's next message; the node's
    answer, or AuthError."""
    r = conn.call(36, 1, _bytes(token))
    code = r.i16()
    message = r.string()
    n = r.i32()
    answer = r.b[r.o:r.o + max(0, n)]
    r.o += max(0, n)
    lifetime = r.take(">q")
    if code != 0:
        raise AuthError(code, message)
    conn.session_lifetime_ms = lifetime
    return answer


def sasl_login(conn, sasl):
    """Authenticates `conn` as sasl["user"] with sasl["password"], by
    sasl["mechanism"] (SCRAM-SHA-512 by default; SCRAM-SHA-256, PLAIN)."""
    mechanism = sasl.get("mechanism", "SCRAM-SHA-512").upper()
    user, password = sasl["user"], sasl["password"]
    sasl_handshake(conn, mechanism)
    if mechanism == "PLAIN":
        sasl_authenticate(conn, b"\0" + user.encode() + b"\0" + password.encode())
        return
    digest = {"SCRAM-SHA-512": "sha512", "SCRAM-SHA-256": "sha256"}[mechanism]
    # RFC 5802, without channel binding ("n,,").
    nonce = _b64(os.urandom(24))
    name = user.replace("=", "=3D").replace(",", "=2C")
    bare = f"n={name},r={nonce}"
    server_first = sasl_authenticate(conn, ("n,," + bare).encode()).decode()
    attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
    if not attrs.get("r", "").startswith(nonce) or attrs["r"] == nonce:
        raise AuthError(-1, f"the server's nonce does not extend ours: {server_first!r}")
    salted = hashlib.pbkdf2_hmac(digest, password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = hmac.new(salted, b"Client Key", digest).digest()
    stored_key = hashlib.new(digest, client_key).digest()
    without_proof = f"c={_b64(b'n,,')},r={attrs['r']}"
    auth_message = f"{bare},{server_first},{without_proof}".encode()
    signature = hmac.new(stored_key, auth_message, digest).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature))
    server_final = sasl_authenticate(conn, f"{without_proof},p={_b64(proof)}".encode()).decode()
    server_key = hmac.new(salted, b"Server Key", digest).digest()
    want = "v=" + _b64(hmac.new(server_key, auth_message, digest).digest())
    if server_final != want:
        raise AuthError(-1, f"the server's signature is wrong: {server_final!r}")


def list_offsets(conn, topic, partitions):
    """ListOffsets v1, latest (-1): {partition: end offset}, {partition: error}."""
    parts = _arr(partitions, lambda p: struct.pack(">iq", p, -1))
    r = conn.call(2, 1, struct.pack(">i", -1) + _arr([topic], lambda t: _str(t) + parts))
    offsets, errors = {}, {}
    for _ in range(r.i32()):
        r.string()
        for _ in range(r.i32()):
            p, code = r.i32(), r.i16()
            r.take(">q")
            off = r.take(">q")
            if code:
                errors[p] = code
            else:
                offsets[p] = off
    return offsets, errors


def handoff_commit_body(from_node, topic, partition, object_key, records=1):
    """A well-formed FerryHandoffCommit v0 payload (see protocol/schemas/
    ferry/): one batch of `records` records at position 0 of `object_key`,
    for (topic, partition), as node `from_node` would send it."""
    batch = struct.pack(">iqIIiiqqhi", 0, 0, 61 + 8 * records, 0, records, records - 1,
                        int(time.time() * 1000), -1, -1, -1)
    part = _str(topic) + bytes(16) + struct.pack(">i", partition) + _arr([batch], lambda b: b)
    return struct.pack(">iq", from_node, 0) + _arr([object_key], _str) + _arr([part], lambda x: x)


def read_reply(sock, corr, timeout):
    """What came back on `sock` within `timeout` after a request with
    correlation id `corr`, as (kind, bytes, note): ("answer", the payload
    after the correlation id), ("closed", the bytes before the close, how
    it closed), ("not_kafka", the bytes) or ("timeout", the bytes so far)."""
    sock.settimeout(timeout)
    buf = b""
    end = time.time() + timeout
    while True:
        if len(buf) >= 8:
            size, got = struct.unpack_from(">ii", buf)
            if got != corr or size < 4 or size > 1 << 24:
                return "not_kafka", buf, ""
            if len(buf) >= 4 + size:
                return "answer", buf[8:4 + size], ""
        left = end - time.time()
        if left <= 0:
            return "timeout", buf, ""
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return "timeout", buf, ""
        except OSError as e:  # reset, broken pipe, a TLS alert
            return "closed", buf, f"{type(e).__name__}: {e}"
        if not chunk:
            return "closed", buf, "EOF"
        buf += chunk


def probe(req):
    """A fresh connection to req["addr"]: TLS if req["tls"], SASL if
    req["sasl"], then one request req["frame"] ({api_key, version, body_hex,
    header: "kafka" (v1, with client id) or "rpc" (Ferry's: no client id)}),
    then a Metadata v1 to see whether the connection still serves. Reports
    each phase; never raises for what the node did."""
    out = {"tls": None, "sasl": None, "reply": None}
    host, port = req["addr"].rsplit(":", 1)
    timeout = req.get("timeout", 10)
    try:
        sock = socket.create_connection((host, int(port)), timeout=timeout)
    except OSError as e:
        out["connect"] = f"{type(e).__name__}: {e}"
        return out
    out["connect"] = "ok"
    try:
        if req.get("tls"):
            try:
                sock = tls_wrap(sock, host, req["tls"])
                out["tls"] = "ok"
            except (ssl.SSLError, OSError) as e:
                out["tls"] = f"{type(e).__name__}: {e}"
                return out
        conn = Conn.__new__(Conn)
        conn.sock, conn.client_id, conn.corr, conn.bytes = sock, req.get("client_id", "ferry-zones-probe"), 0, 0
        if req.get("sasl"):
            try:
                sasl_login(conn, req["sasl"])
                out["sasl"] = {"ok": True, "session_lifetime_ms": conn.session_lifetime_ms}
            except AuthError as e:
                out["sasl"] = {"ok": False, "error_code": e.code, "error_message": e.message}
            except (IOError, OSError, struct.error) as e:
                out["sasl"] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        f = req.get("frame")
        if f:
            conn.corr += 1
            body = bytes.fromhex(f.get("body_hex", ""))
            if f.get("header", "kafka") == "rpc":
                head = struct.pack(">hhi", f["api_key"], f["version"], conn.corr)
            else:
                head = struct.pack(">hhi", f["api_key"], f["version"], conn.corr) + _str(conn.client_id)
            try:
                sock.sendall(struct.pack(">i", len(head + body)) + head + body)
                kind, data, note = read_reply(sock, conn.corr, timeout)
            except OSError as e:
                kind, data, note = "closed", b"", f"on send: {type(e).__name__}: {e}"
            out["reply"] = kind
            out["reply_hex"] = data[:64].hex()
            out["reply_note"] = note
            if kind == "answer" and f.get("header") == "rpc" and f["api_key"] == 32000:
                rr = Reader(data)
                out["rpc_error_codes"] = [c for batches in rr.array(
                    lambda: rr.array(lambda: (rr.i16(), rr.take(">q"), rr.take(">q"))[0])) for c in batches]
        # Does the connection still serve?
        try:
            metadata(conn, [])
            out["serves_after"] = True
        except (IOError, OSError, struct.error) as e:
            out["serves_after"] = False
            out["after_error"] = f"{type(e).__name__}: {e}"
        return out
    finally:
        try:
            sock.close()
        except OSError:
            pass


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

    def conn(addr, client_id, key, source=None, tls=None, sasl=None):
        k = (key or "default", addr, client_id, json.dumps(tls, sort_keys=True), json.dumps(sasl, sort_keys=True))
        if k not in conns:
            conns[k] = Conn(addr, client_id, source=source, tls=tls, sasl=sasl)
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
    if cmd == "probe":
        return probe(req)
    try:
        c = conn(req["addr"], req.get("client_id", "ferry-zones-admin"), req.get("conn"), req.get("source"),
                 req.get("tls"), req.get("sasl"))
    except AuthError as e:
        return {"error": str(e), "auth_error_code": e.code}
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
    if cmd == "list_offsets":
        offsets, errors = list_offsets(c, req["topic"], req["partitions"])
        return {"offsets": offsets, "errors": errors}
    if cmd == "close":
        for k in [k for k in conns if k[0] == req.get("conn")]:
            conns.pop(k).close()
        return {"ok": True}
    raise ValueError(f"unknown command {cmd}")


def load_conf(path):
    """librdkafka settings from a JSON file ({} without one)."""
    if not path:
        return {}
    with open(path) as f:
        return json.load(f)


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
    conf.update(load_conf(args.conf_json))
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
    conf.update(load_conf(args.conf_json))
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


# --------------------------------------------------------------- admin ----

def admin(args):
    """With confluent-kafka's AdminClient: upserts the SCRAM credentials of
    --plan's "users" ([{name, password, mechanism, iterations}]), creates
    its "acls" ([{resource_type, name, pattern, principal, operation}], all
    ALLOW from any host), then reads both back. Prints a JSON summary; every
    result is reported, the harness decides."""
    from confluent_kafka.admin import (AclBinding, AclBindingFilter, AdminClient, ScramCredentialInfo,
                                       ScramMechanism, UserScramCredentialUpsertion)
    conf = {"bootstrap.servers": args.bootstrap, "client.id": args.client_id,
            "socket.connection.setup.timeout.ms": 5000}
    conf.update(load_conf(args.conf_json))
    with open(args.plan) as f:
        plan = json.load(f)
    a = AdminClient(conf)
    t = args.timeout
    out = {"users": {}, "acls": {}}
    ups = [UserScramCredentialUpsertion(u["name"], ScramCredentialInfo(
        ScramMechanism[u.get("mechanism", "SCRAM-SHA-512").replace("-", "_")], u.get("iterations", 4096)),
        u["password"].encode()) for u in plan.get("users", [])]
    if ups:
        for user, fut in a.alter_user_scram_credentials(ups, request_timeout=t).items():
            try:
                fut.result(timeout=t + 5)
                out["users"][user] = "ok"
            except Exception as e:
                out["users"][user] = f"{type(e).__name__}: {e}"
    bindings = [AclBinding(b["resource_type"], b["name"], b["pattern"], b["principal"], "*", b["operation"], "ALLOW")
                for b in plan.get("acls", [])]
    if bindings:
        for b, fut in a.create_acls(bindings, request_timeout=t).items():
            key = f"{b.principal} {b.operation.name} {b.restype.name}:{b.resource_pattern_type.name}:{b.name}"
            try:
                fut.result(timeout=t + 5)
                out["acls"][key] = "ok"
            except Exception as e:
                out["acls"][key] = f"{type(e).__name__}: {e}"
    try:
        found = a.describe_acls(AclBindingFilter("ANY", None, "ANY", None, None, "ANY", "ANY"),
                                request_timeout=t).result(timeout=t + 5)
        out["described_acls"] = sorted(
            f"{b.principal} {b.operation.name} {b.restype.name}:{b.resource_pattern_type.name}:{b.name} "
            f"{b.permission_type.name}" for b in found)
    except Exception as e:
        out["described_acls_error"] = f"{type(e).__name__}: {e}"
    try:
        users = a.describe_user_scram_credentials(request_timeout=t).result(timeout=t + 5)
        out["described_users"] = {u: sorted(f"{i.mechanism.name}/{i.iterations}" for i in d.scram_credential_infos)
                                  for u, d in users.items()}
    except Exception as e:
        out["described_users_error"] = f"{type(e).__name__}: {e}"
    print(json.dumps(out), flush=True)


def auth_probe(args):
    """A confluent-kafka AdminClient with --conf-json's settings asks for
    the cluster's metadata (bounded by --timeout); prints whether it got it
    and every error its error callback saw."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient
    errors = []
    conf = {"bootstrap.servers": args.bootstrap, "client.id": args.client_id,
            "socket.connection.setup.timeout.ms": 5000, "reconnect.backoff.ms": 200,
            "error_cb": lambda e: errors.append([e.name(), e.str()])}
    conf.update(load_conf(args.conf_json))
    a = AdminClient(conf)
    out = {"metadata_ok": False}
    try:
        md = a.list_topics(timeout=args.timeout)
        out["metadata_ok"] = True
        out["brokers"] = len(md.brokers)
    except KafkaException as e:
        out["metadata_error"] = str(e.args[0])
    end = time.time() + 2
    while time.time() < end:
        a.poll(0.2)
    out["errors"] = errors[:20]
    out["error_names"] = sorted({e[0] for e in errors})
    print(json.dumps(out), flush=True)


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
    p.add_argument("--conf-json", default="", help="librdkafka settings (JSON), merged last")
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
    c.add_argument("--conf-json", default="", help="librdkafka settings (JSON), merged last")
    a = sub.add_parser("admin")
    a.add_argument("--bootstrap", required=True)
    a.add_argument("--client-id", default="ferry-zones-admin")
    a.add_argument("--conf-json", default="")
    a.add_argument("--plan", required=True, help="JSON: {users: [...], acls: [...]}")
    a.add_argument("--timeout", type=float, default=20)
    pr = sub.add_parser("auth-probe")
    pr.add_argument("--bootstrap", required=True)
    pr.add_argument("--client-id", default="ferry-zones-auth-probe")
    pr.add_argument("--conf-json", default="")
    pr.add_argument("--timeout", type=float, default=8)
    args = ap.parse_args()
    if args.cmd == "agent":
        agent()
    elif args.cmd == "produce":
        produce(args)
    elif args.cmd == "consume":
        consume(args)
    elif args.cmd == "admin":
        admin(args)
    else:
        auth_probe(args)


if __name__ == "__main__":
    main()
