"""ACLs enforced by a proxy in the client's zone (confluent-kafka).

Usage: acl_zones.py zone_a=HOST:PORT zone_b=HOST:PORT

Two nodes, one per zone, SASL PLAIN; users admin (super user), alice
(WRITE and READ on topic zz, READ on group gz) and bob (no ACL). Clients of
zone-b talk to zone-b's node only, which stands in for leaders in zone-a.
Checks, one line each, exiting non-zero at the first failure: alice
produces to both partitions through zone-b and consumes them back in a
group; bob's produce through zone-b is refused (TOPIC_AUTHORIZATION_FAILED)
and adds nothing.
"""
import sys
import time

from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

args = dict(a.split("=", 1) for a in sys.argv[1:])
PASSWORDS = {"admin": "admin-pw", "alice": "alice-pw", "bob": "bob-pw"}
TIMEOUT = 20


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)
    print("ok:", msg, flush=True)


def conf(user, zone):
    return {"bootstrap.servers": args[zone.replace("-", "_")],
            "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
            "sasl.username": user, "sasl.password": PASSWORDS[user],
            "client.id": f"automq_az={zone}&acl-{user}"}


admin = AdminClient(conf("admin", "zone-a"))
admin.create_topics([NewTopic("zz", 2, 1)])["zz"].result(timeout=TIMEOUT)
md = AdminClient(conf("alice", "zone-b")).list_topics(timeout=TIMEOUT)
leaders = sorted({p.leader for p in md.topics["zz"].partitions.values()})
check(leaders == [2], f"zone-b's clients see zone-b's node as every leader: {leaders}")

results = []
p = Producer({**conf("alice", "zone-b"), "enable.idempotence": True})
for i in range(40):
    p.produce("zz", partition=i % 2, value=f"a{i}".encode(),
              on_delivery=lambda err, msg: results.append(err))
p.flush(TIMEOUT)
check(len(results) == 40 and not any(results),
      f"alice produced 40 records to both partitions through zone-b: {[e for e in results if e][:2]}")

bob_results = []
bp = Producer({**conf("bob", "zone-b"), "message.timeout.ms": 10000})
bp.produce("zz", partition=0, value=b"bob", on_delivery=lambda err, msg: bob_results.append(err))
bp.produce("zz", partition=1, value=b"bob", on_delivery=lambda err, msg: bob_results.append(err))
bp.flush(TIMEOUT)
check(len(bob_results) == 2
      and all(e is not None and e.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
              for e in bob_results),
      f"the proxy refused bob's produce: {bob_results}")

c = Consumer({**conf("alice", "zone-b"), "group.id": "gz", "auto.offset.reset": "earliest"})
c.subscribe(["zz"])
got, deadline = [], time.time() + 60
while time.time() < deadline:
    m = c.poll(1.0)
    if m is None:
        if len(got) >= 40:
            break
        continue
    if not m.error():
        got.append(m.value())
c.close()
check(len(got) == 40 and b"bob" not in got,
      f"alice consumed exactly her 40 records in group gz through zone-b ({len(got)})")
print("all cross-zone ACL checks passed", flush=True)
