"""Kafka clients over TLS: confluent-kafka (librdkafka) and kafka-python.

Usage: tls_clients.py ssl=HOST:PORT mtls=HOST:PORT ca=PATH alice_cert=PATH
       alice_key=PATH rogue_ca=PATH rogue_cert=PATH rogue_key=PATH
       expired_cert=PATH expired_key=PATH

`ssl` is a TLS listener without client certificates, `mtls` one that
requires them (alice's is signed by `ca`, rogue's by another CA, expired's
by `ca` but expired). Checks, one line each, exiting non-zero at the first
failure:
- each client produces and consumes in a group over SSL and over mTLS, and
  the metadata names the port of the listener it connected to;
- admin calls work over mTLS;
- an untrusted or expired client certificate, a client that does not trust
  the node's CA, and a plaintext client on the SSL port are refused with
  the client's ordinary error, and the node then serves alice again.
"""
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient
import kafka.errors as kp_errors

args = dict(a.split("=", 1) for a in sys.argv[1:])
SSL, MTLS = args["ssl"], args["mtls"]
TIMEOUT = 20


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)
    print("ok:", msg, flush=True)


def ck_conf(bootstrap, cert=None, key=None, ca=None, protocol="SSL"):
    c = {
        "bootstrap.servers": bootstrap,
        "security.protocol": protocol,
        "client.id": "tls-test",
    }
    if protocol == "SSL":
        c["ssl.ca.location"] = ca or args["ca"]
        # The node's certificate names 127.0.0.1.
        c["ssl.endpoint.identification.algorithm"] = "https"
    if cert:
        c["ssl.certificate.location"] = cert
        c["ssl.key.location"] = key
    return c


def ck_round_trip(bootstrap, label, **tls):
    topic = f"tls-{label.split()[0]}-{uuid.uuid4().hex[:6]}"
    conf = ck_conf(bootstrap, **tls)
    admin = AdminClient(conf)
    futures = admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    futures[topic].result(timeout=TIMEOUT)
    md = admin.list_topics(timeout=TIMEOUT)
    port = int(bootstrap.rsplit(":", 1)[1])
    check(all(b.port == port for b in md.brokers.values()),
          f"{label}: metadata advertises this listener's port {port}: {[b.port for b in md.brokers.values()]}")
    p = Producer({**conf, "enable.idempotence": True})
    for i in range(50):
        p.produce(topic, key=str(i).encode(), value=f"v{i}".encode())
    left = p.flush(TIMEOUT)
    check(left == 0, f"{label}: confluent-kafka produced 50 records")
    c = Consumer({**conf, "group.id": f"g-{topic}", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.subscribe([topic])
    got = set()
    deadline = time.time() + 60
    while len(got) < 50 and time.time() < deadline:
        m = c.poll(1.0)
        if m is None or m.error():
            continue
        got.add(m.value())
    c.commit(asynchronous=False)
    c.close()
    check(len(got) == 50, f"{label}: confluent-kafka consumed all 50 in a group ({len(got)})")
    return topic


def kp_tls(cert=None, key=None, ca=None):
    c = {"security_protocol": "SSL", "ssl_cafile": ca or args["ca"], "ssl_check_hostname": True}
    if cert:
        c["ssl_certfile"] = cert
        c["ssl_keyfile"] = key
    return c


def kp_round_trip(bootstrap, label, topic, **tls):
    conf = kp_tls(**tls)
    p = KafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=TIMEOUT * 1000, **conf)
    for i in range(20):
        p.send(topic, key=b"k", value=f"kp{i}".encode()).get(timeout=TIMEOUT)
    p.close()
    check(True, f"{label}: kafka-python produced 20 records")
    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"kp-{topic}",
                      auto_offset_reset="earliest", consumer_timeout_ms=15000, **conf)
    got = [m.value for m in c if m.value.startswith(b"kp")]
    c.close()
    check(len(got) == 20, f"{label}: kafka-python consumed its 20 records in a group ({len(got)})")
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, **conf)
    check(topic in admin.list_topics(), f"{label}: kafka-python admin lists {topic}")
    admin.close()


def ck_refused(bootstrap, label, **tls):
    # Quiet: librdkafka logs every refused attempt.
    admin = AdminClient({**ck_conf(bootstrap, **tls), "socket.timeout.ms": 3000,
                         "reconnect.backoff.ms": 1000, "log_level": 0})
    try:
        admin.list_topics(timeout=6)
    except KafkaException as e:
        check(True, f"{label}: confluent-kafka refused ({e.args[0].name()})")
        return
    fail(f"{label}: confluent-kafka got metadata")


def kp_refused(bootstrap, label, **tls):
    try:
        a = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000,
                             **kp_tls(**tls))
        a.close()
    except (kp_errors.KafkaConnectionError, kp_errors.KafkaTimeoutError,
            kp_errors.UnrecognizedBrokerVersion) as e:
        check(True, f"{label}: kafka-python refused ({type(e).__name__})")
        return
    fail(f"{label}: kafka-python connected")


alice = {"cert": args["alice_cert"], "key": args["alice_key"]}
t_ssl = ck_round_trip(SSL, "ssl")
t_mtls = ck_round_trip(MTLS, "mtls", **alice)
kp_round_trip(SSL, "ssl", t_ssl)
kp_round_trip(MTLS, "mtls", t_mtls, **alice)

ck_refused(MTLS, "mtls without a client certificate")
ck_refused(MTLS, "mtls with an untrusted client certificate",
           cert=args["rogue_cert"], key=args["rogue_key"])
ck_refused(MTLS, "mtls with an expired client certificate",
           cert=args["expired_cert"], key=args["expired_key"])
kp_refused(MTLS, "mtls with an untrusted client certificate",
           cert=args["rogue_cert"], key=args["rogue_key"])
ck_refused(SSL, "a client that does not trust the node's CA", ca=args["rogue_ca"])
ck_refused(SSL, "a plaintext client on the SSL listener", protocol="PLAINTEXT")

# The node still serves everyone else.
ck_round_trip(MTLS, "mtls after the refusals", **alice)
print("all TLS checks passed", flush=True)
