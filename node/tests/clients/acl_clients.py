"""ACLs through real clients (confluent-kafka; kafka-python for the admin
calls too).

Usage: acl_clients.py bootstrap=HOST:PORT admin=PASSWORD alice=PASSWORD bob=PASSWORD

The node serves SASL_PLAINTEXT (PLAIN), with `User:admin` a super user and
ACLs on (no allow-if-no-ACL). Checks, one line each, exiting non-zero at the
first failure: the admin creates topics and ACLs (literal and prefixed,
ALLOW and DENY) and describes them with MATCH and ANY filters; alice may do
exactly what they allow (DENY over ALLOW, implied DESCRIBE), and what she
may not do is refused with Kafka's error code and changes nothing; bob,
with no ACL, sees no topic; a deleted ACL stops applying at once.
"""
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType,
                                   AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   NewPartitions, NewTopic, OffsetSpec, ResourcePatternType,
                                   ResourceType)
from kafka.admin import (ACLFilter, ACLOperation, ACLPermissionType, ACLResourcePatternType,
                         KafkaAdminClient, ResourcePatternFilter)
from kafka.admin import ResourceType as KpResourceType

args = dict(a.split("=", 1) for a in sys.argv[1:])
BOOT = args["bootstrap"]
TIMEOUT = 20


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)
    print("ok:", msg, flush=True)


def conf(user):
    return {"bootstrap.servers": BOOT, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN", "sasl.username": user, "sasl.password": args[user],
            "client.id": f"acl-{user}"}


def code_of(exc):
    return exc.args[0].code()


admin = AdminClient(conf("admin"))
for t in ["acl-t1", "acl-pre-x", "acl-pre-denied", "acl-secret"]:
    admin.create_topics([NewTopic(t, 1, 1)])[t].result(timeout=TIMEOUT)
p = Producer(conf("admin"))
for t in ["acl-pre-x", "acl-pre-denied", "acl-secret"]:
    for i in range(5):
        p.produce(t, value=f"{t}-{i}".encode())
check(p.flush(TIMEOUT) == 0, "the super user created four topics and wrote to three")

ALICE = "User:alice"
L, PFX = ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED
ALLOW, DENY = AclPermissionType.ALLOW, AclPermissionType.DENY
bindings = [
    AclBinding(ResourceType.TOPIC, "acl-t1", L, ALICE, "*", AclOperation.WRITE, ALLOW),
    AclBinding(ResourceType.TOPIC, "acl-pre", PFX, ALICE, "*", AclOperation.READ, ALLOW),
    AclBinding(ResourceType.TOPIC, "acl-pre-denied", L, ALICE, "*", AclOperation.READ, DENY),
    AclBinding(ResourceType.GROUP, "g-alice", L, ALICE, "*", AclOperation.READ, ALLOW),
]
for b, f in admin.create_acls(bindings).items():
    f.result(timeout=TIMEOUT)
check(True, "the super user created 4 ACLs")
match = admin.describe_acls(AclBindingFilter(ResourceType.TOPIC, "acl-pre-x", ResourcePatternType.MATCH,
                                             None, None, AclOperation.ANY,
                                             AclPermissionType.ANY)).result(timeout=TIMEOUT)
check([(b.name, b.resource_pattern_type) for b in match] == [("acl-pre", PFX)],
      f"MATCH on acl-pre-x finds the prefixed binding: {match}")
every = admin.describe_acls(AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None,
                                             None, AclOperation.ANY,
                                             AclPermissionType.ANY)).result(timeout=TIMEOUT)
check(len(every) == 4, f"ANY lists all 4 bindings ({len(every)})")
kp = KafkaAdminClient(bootstrap_servers=BOOT, security_protocol="SASL_PLAINTEXT",
                      sasl_mechanism="PLAIN", sasl_plain_username="admin",
                      sasl_plain_password=args["admin"])
kp_acls, kp_err = kp.describe_acls(ACLFilter(principal=None, host="*", operation=ACLOperation.ANY,
                                             permission_type=ACLPermissionType.ANY,
                                             resource_pattern=ResourcePatternFilter(
                                                 KpResourceType.GROUP, None,
                                                 ACLResourcePatternType.ANY)))
check(len(kp_acls) == 1 and kp_acls[0].resource_pattern.resource_name == "g-alice",
      f"kafka-python describes the group binding: {kp_acls}")

# --- alice -------------------------------------------------------------------------------------
alice = AdminClient(conf("alice"))
md = alice.list_topics(timeout=TIMEOUT)
seen = sorted(t for t in md.topics)
check(seen == ["acl-pre-denied", "acl-pre-x", "acl-t1"],
      f"alice's metadata lists the topics she may describe (implied by READ/WRITE): {seen}")

ap = Producer({**conf("alice"), "message.timeout.ms": 10000})
results = {}


def dr(err, msg):
    results[msg.topic()] = err


ap.produce("acl-t1", value=b"ok", on_delivery=dr)
ap.produce("acl-pre-x", value=b"no", on_delivery=dr)
ap.flush(TIMEOUT)
check(results.get("acl-t1") is None, "alice writes to acl-t1 (WRITE)")
err = results.get("acl-pre-x")
check(err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED,
      f"alice may not write to acl-pre-x (READ only): {err}")


def consume(user, topic, group, n):
    c = Consumer({**conf(user), "group.id": group, "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    got, errs = [], []
    deadline = time.time() + 20
    while len(got) < n and time.time() < deadline:
        m = c.poll(1.0)
        if m is None:
            continue
        if m.error():
            errs.append(m.error())
            if m.error().code() in (KafkaError.TOPIC_AUTHORIZATION_FAILED,
                                    KafkaError.GROUP_AUTHORIZATION_FAILED):
                break
            continue
        got.append(m.value())
    c.close()
    return got, errs


got, _ = consume("alice", "acl-pre-x", "g-alice", 5)
check(len(got) == 5, f"alice reads acl-pre-x in group g-alice (prefixed READ): {len(got)}")
got, errs = consume("alice", "acl-pre-denied", "g-alice", 5)
check(not got and any(e.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED for e in errs),
      f"DENY on acl-pre-denied wins over the prefixed ALLOW: {errs[:1]}")
got, errs = consume("alice", "acl-pre-x", "g-other", 5)
check(not got and any(e.code() == KafkaError.GROUP_AUTHORIZATION_FAILED for e in errs),
      f"alice may not use group g-other: {errs[:1]}")

f = alice.create_topics([NewTopic("acl-new", 1, 1)])["acl-new"]
try:
    f.result(timeout=TIMEOUT)
    fail("alice created a topic")
except KafkaException as e:
    check(code_of(e) == KafkaError.TOPIC_AUTHORIZATION_FAILED, "alice may not create topics")
f = alice.delete_topics(["acl-t1"])["acl-t1"]
try:
    f.result(timeout=TIMEOUT)
    fail("alice deleted a topic")
except KafkaException as e:
    check(code_of(e) == KafkaError.TOPIC_AUTHORIZATION_FAILED, "alice may not delete acl-t1")
f = alice.create_partitions([NewPartitions("acl-t1", 3)])["acl-t1"]
try:
    f.result(timeout=TIMEOUT)
    fail("alice added partitions")
except KafkaException as e:
    check(code_of(e) == KafkaError.TOPIC_AUTHORIZATION_FAILED, "alice may not alter acl-t1")
try:
    list(alice.create_acls([bindings[0]]).values())[0].result(timeout=TIMEOUT)
    fail("alice created an ACL")
except KafkaException as e:
    check(code_of(e) == KafkaError.CLUSTER_AUTHORIZATION_FAILED, "alice may not create ACLs")
md = admin.list_topics(timeout=TIMEOUT)
check("acl-t1" in md.topics and "acl-new" not in md.topics
      and len(md.topics["acl-t1"].partitions) == 1,
      "the refused calls changed nothing (acl-t1 kept, 1 partition; acl-new absent)")

# Configs need DESCRIBE_CONFIGS / ALTER_CONFIGS, which READ and WRITE do not imply.
res = ConfigResource(ResourceType.TOPIC, "acl-t1")
try:
    alice.describe_configs([res])[res].result(timeout=TIMEOUT)
    fail("alice described acl-t1's configs")
except KafkaException as e:
    check(code_of(e) == KafkaError.TOPIC_AUTHORIZATION_FAILED, "alice may not describe acl-t1's configs")
alter = ConfigResource(ResourceType.TOPIC, "acl-t1", incremental_configs=[
    ConfigEntry("retention.ms", "1000", incremental_operation=AlterConfigOpType.SET)])
try:
    alice.incremental_alter_configs([alter])[alter].result(timeout=TIMEOUT)
    fail("alice altered acl-t1's configs")
except KafkaException as e:
    check(code_of(e) == KafkaError.TOPIC_AUTHORIZATION_FAILED, "alice may not alter acl-t1's configs")
described = admin.describe_configs([res])[res].result(timeout=TIMEOUT)
check(described["retention.ms"].value != "1000", "the refused alteration changed nothing")
# ListOffsets needs DESCRIBE: implied on acl-t1 (WRITE), absent on acl-secret.
got = alice.list_offsets({TopicPartition("acl-t1", 0): OffsetSpec.latest()})
check(list(got.values())[0].result(timeout=TIMEOUT).offset >= 1, "alice lists acl-t1's offsets")
got = alice.list_offsets({TopicPartition("acl-secret", 0): OffsetSpec.latest()})
try:
    r = list(got.values())[0].result(timeout=TIMEOUT)
    fail(f"alice listed acl-secret's offsets: {r.offset}")
except KafkaException as e:
    # librdkafka asks Metadata first, which refuses the topic, so the client
    # answers "no such topic" itself (the broker's own ListOffsets check is
    # tested with a raw request in security_acls.rs).
    check(code_of(e) in (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError._NOENT),
          f"alice may not list acl-secret's offsets: {e.args[0].name()}")

# --- bob: no ACL at all ------------------------------------------------------------------------
bob = AdminClient(conf("bob"))
check(not bob.list_topics(timeout=TIMEOUT).topics, "bob, with no ACL, sees no topic")
# An idempotent producer needs IDEMPOTENT_WRITE or WRITE on some topic:
# alice's InitProducerId is taken (the refusal is tested with a raw request
# in security_acls.rs).
idem = []
aip = Producer({**conf("alice"), "enable.idempotence": True})
aip.produce("acl-t1", value=b"idem", on_delivery=lambda err, msg: idem.append(err))
aip.flush(TIMEOUT)
check(idem == [None], f"alice's idempotent producer writes to acl-t1: {idem}")

# --- a deleted ACL stops applying at once -----------------------------------------------------
deleted = admin.delete_acls([AclBindingFilter(ResourceType.TOPIC, "acl-t1", L, ALICE, "*",
                                              AclOperation.WRITE, ALLOW)])
matched = list(deleted.values())[0].result(timeout=TIMEOUT)
check(len(matched) == 1, f"delete_acls matched alice's WRITE: {matched}")
time.sleep(1)
results.clear()
ap.produce("acl-t1", value=b"late", on_delivery=dr)
ap.flush(TIMEOUT)
err = results.get("acl-t1")
check(err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED,
      f"within a second alice may no longer write to acl-t1: {err}")
print("all ACL checks passed", flush=True)
