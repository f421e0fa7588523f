"""Kafka clients over SASL: confluent-kafka (librdkafka) and kafka-python.

Usage: sasl_clients.py sasl_ssl=HOST:PORT sasl_plaintext=HOST:PORT
       plaintext=HOST:PORT ca=PATH

`sasl_ssl` serves PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 over TLS;
`sasl_plaintext` serves SCRAM-SHA-512 only; `plaintext` authenticates
nobody (the admin's way in for this test). Sessions last 3 s
(connections.max.reauth.ms). Checks, one line each, exiting non-zero at the
first failure:
- SCRAM credentials are created, described and deleted with both clients'
  admin APIs (KIP-554);
- with each mechanism, each client produces and consumes in a group and
  calls an admin API;
- a wrong password, an unknown user, a mechanism the listener does not
  serve, SASL against the PLAINTEXT listener and a deleted user get the
  client's ordinary authentication error, and the node serves on;
- a librdkafka producer keeps producing across several session lifetimes
  (it re-authenticates, KIP-368).
"""
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (AdminClient, NewTopic, ScramCredentialInfo, ScramMechanism,
                                   UserScramCredentialDeletion, UserScramCredentialUpsertion)
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient
import kafka.errors as kp_errors

args = dict(a.split("=", 1) for a in sys.argv[1:])
SASL_SSL, SASL_PLAIN, PLAIN = args["sasl_ssl"], args["sasl_plaintext"], args["plaintext"]
TIMEOUT = 20
PASSWORD = "alice-secret-" + uuid.uuid4().hex[:8]


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)
    print("ok:", msg, flush=True)


def ck_conf(bootstrap, mechanism, user="alice", password=PASSWORD, tls=True):
    return {
        "bootstrap.servers": bootstrap,
        "security.protocol": "SASL_SSL" if tls else "SASL_PLAINTEXT",
        "sasl.mechanism": mechanism,
        "sasl.username": user,
        "sasl.password": password,
        "ssl.ca.location": args["ca"],
        "client.id": "sasl-test",
    }


# --- Credentials, through the PLAINTEXT listener ---------------------------------------
admin = AdminClient({"bootstrap.servers": PLAIN})
alterations = [
    UserScramCredentialUpsertion("alice", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096),
                                 PASSWORD.encode()),
    UserScramCredentialUpsertion("alice", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192),
                                 PASSWORD.encode()),
    UserScramCredentialUpsertion("bob", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096),
                                 b"bob-secret"),
]
for user, f in admin.alter_user_scram_credentials(alterations).items():
    f.result(timeout=TIMEOUT)
check(True, "confluent-kafka created SCRAM credentials for alice and bob")
described = admin.describe_user_scram_credentials(["alice"])["alice"].result(timeout=TIMEOUT)
infos = sorted((i.mechanism, i.iterations) for i in described.scram_credential_infos)
check(infos == [(ScramMechanism.SCRAM_SHA_256, 4096), (ScramMechanism.SCRAM_SHA_512, 8192)],
      f"alice is described with both mechanisms and their iterations: {infos}")
# Out-of-range iterations are refused, and change nothing.
bad = admin.alter_user_scram_credentials([UserScramCredentialUpsertion(
    "carol", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 100), b"x")])
try:
    bad["carol"].result(timeout=TIMEOUT)
    fail("100 iterations were accepted")
except KafkaException as e:
    check(e.args[0].code() == KafkaError.UNACCEPTABLE_CREDENTIAL,
          f"100 iterations refused: {e.args[0].name()}")
kp_admin = KafkaAdminClient(bootstrap_servers=PLAIN)
kp_desc = kp_admin.describe_user_scram_credentials(["bob"])
check("bob" in str(kp_desc), f"kafka-python describes bob: {kp_desc}")
kp_admin.close()


# --- Each mechanism, each client ---------------------------------------------------------
def ck_round_trip(bootstrap, mechanism, tls=True):
    topic = f"sasl-{mechanism.lower()}-{uuid.uuid4().hex[:6]}"
    conf = ck_conf(bootstrap, mechanism, tls=tls)
    a = AdminClient(conf)
    a.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result(
        timeout=TIMEOUT)
    p = Producer({**conf, "enable.idempotence": True})
    for i in range(30):
        p.produce(topic, value=f"v{i}".encode())
    check(p.flush(TIMEOUT) == 0, f"{mechanism}: confluent-kafka produced 30 records")
    c = Consumer({**conf, "group.id": f"g-{topic}", "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    got, deadline = 0, time.time() + 60
    while got < 30 and time.time() < deadline:
        m = c.poll(1.0)
        if m is not None and not m.error():
            got += 1
    c.close()
    check(got == 30, f"{mechanism}: confluent-kafka consumed 30 in a group ({got})")
    return topic


def kp_conf(mechanism, user="alice", password=PASSWORD):
    return {"security_protocol": "SASL_SSL", "ssl_cafile": args["ca"], "sasl_mechanism": mechanism,
            "sasl_plain_username": user, "sasl_plain_password": password}


def kp_round_trip(mechanism, topic):
    conf = kp_conf(mechanism)
    p = KafkaProducer(bootstrap_servers=SASL_SSL, **conf)
    for i in range(10):
        p.send(topic, value=f"kp{i}".encode()).get(timeout=TIMEOUT)
    p.close()
    c = KafkaConsumer(topic, bootstrap_servers=SASL_SSL, group_id=f"kp-{topic}",
                      auto_offset_reset="earliest", consumer_timeout_ms=15000, **conf)
    got = [m.value for m in c if m.value.startswith(b"kp")]
    c.close()
    check(len(got) == 10, f"{mechanism}: kafka-python produced and consumed 10 in a group")


for mech in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]:
    t = ck_round_trip(SASL_SSL, mech)
    kp_round_trip(mech, t)
ck_round_trip(SASL_PLAIN, "SCRAM-SHA-512", tls=False)


# --- Refusals ------------------------------------------------------------------------------
def ck_refused(label, conf):
    """The client reports an authentication error (librdkafka's error
    callback gets _AUTHENTICATION with the node's reason) and gets nothing."""
    errs = []
    a = AdminClient({**conf, "reconnect.backoff.ms": 1000, "log_level": 0,
                     "error_cb": errs.append})
    try:
        a.list_topics(timeout=5)
        fail(f"{label}: got metadata")
    except KafkaException:
        pass
    # The error callback is served on poll.
    deadline = time.time() + 5
    while not any(e.code() == KafkaError._AUTHENTICATION for e in errs) and time.time() < deadline:
        a.poll(0.5)
    auth = [e for e in errs if e.code() == KafkaError._AUTHENTICATION]
    check(auth, f"{label}: refused with an authentication error "
                f"({auth[0].str()[:140] if auth else [e.str() for e in errs[:2]]})")


ck_refused("wrong password, SCRAM-SHA-256", ck_conf(SASL_SSL, "SCRAM-SHA-256", password="nope"))
ck_refused("wrong password, PLAIN", ck_conf(SASL_SSL, "PLAIN", password="nope"))
ck_refused("unknown user, SCRAM-SHA-512", ck_conf(SASL_SSL, "SCRAM-SHA-512", user="nobody"))
ck_refused("a mechanism the listener does not serve",
           ck_conf(SASL_PLAIN, "SCRAM-SHA-256", tls=False))
ck_refused("SASL against the PLAINTEXT listener", ck_conf(PLAIN, "SCRAM-SHA-256", tls=False))
try:
    KafkaAdminClient(bootstrap_servers=SASL_SSL, request_timeout_ms=5000,
                     **kp_conf("SCRAM-SHA-256", password="nope")).close()
    fail("kafka-python logged in with a wrong password")
except (kp_errors.SaslAuthenticationFailedError, kp_errors.KafkaTimeoutError) as e:
    check(True, f"kafka-python, wrong password: refused ({type(e).__name__})")

# A deleted credential no longer logs in.
admin.alter_user_scram_credentials([UserScramCredentialDeletion("bob", ScramMechanism.SCRAM_SHA_512)])[
    "bob"].result(timeout=TIMEOUT)
ck_refused("a deleted user", ck_conf(SASL_SSL, "SCRAM-SHA-512", user="bob", password="bob-secret"))

# --- Re-authentication: sessions last 3 s ------------------------------------------------------
topic = f"sasl-reauth-{uuid.uuid4().hex[:6]}"
conf = ck_conf(SASL_SSL, "SCRAM-SHA-512")
reauth_admin = AdminClient(conf)
reauth_admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=TIMEOUT)
p = Producer(conf)
errors = []
delivered = [0]


def on_delivery(err, msg):
    if err:
        errors.append(err)
    else:
        delivered[0] += 1


end = time.time() + 10
n = 0
while time.time() < end:
    p.produce(topic, value=b"x", on_delivery=on_delivery)
    n += 1
    p.poll(0.2)
p.flush(TIMEOUT)
check(not errors and delivered[0] == n,
      f"a producer kept producing over 10 s of 3 s sessions: {delivered[0]}/{n}, errors {errors[:3]}")
print("all SASL checks passed", flush=True)
