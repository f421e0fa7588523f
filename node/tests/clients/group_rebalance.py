"""A consumer group of two members (librdkafka) rebalances when one leaves;
committed offsets are read back (phase `check`, run after a node restart).

Usage: group_rebalance.py BOOTSTRAP run|check
"""
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap, phase = sys.argv[1], sys.argv[2]
TOPIC, GROUP, PARTS = "grouped", "g1", 4
DEADLINE_S = 60


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def consumer(name):
    return Consumer({"bootstrap.servers": bootstrap, "group.id": GROUP, "client.id": name,
                     "enable.auto.commit": False, "auto.offset.reset": "earliest",
                     "session.timeout.ms": 6000, "heartbeat.interval.ms": 500})


def poll_until(consumers, cond, what):
    end = time.time() + DEADLINE_S
    while time.time() < end:
        for c in consumers:
            c.poll(0.2)
        if cond():
            return
    fail(f"timed out waiting for {what}: " + ", ".join(str(len(c.assignment())) for c in consumers))


if phase == "run":
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for _, f in admin.create_topics([NewTopic(TOPIC, PARTS, 1)]).items():
        f.result(timeout=20)
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for i in range(40):
        p.produce(TOPIC, value=f"v{i}".encode(), partition=i % PARTS)
    if p.flush(30):
        fail("produce did not finish")
    a = consumer("member-a")
    a.subscribe([TOPIC])
    poll_until([a], lambda: len(a.assignment()) == PARTS, "member a to own every partition")
    print("a alone:", sorted(tp.partition for tp in a.assignment()), flush=True)
    b = consumer("member-b")
    b.subscribe([TOPIC])
    poll_until([a, b], lambda: len(a.assignment()) + len(b.assignment()) == PARTS
               and len(a.assignment()) > 0 and len(b.assignment()) > 0, "a and b to share the partitions")
    sa = {tp.partition for tp in a.assignment()}
    sb = {tp.partition for tp in b.assignment()}
    if sa & sb:
        fail(f"a partition is assigned twice: {sa} {sb}")
    print("a and b:", sorted(sa), sorted(sb), flush=True)
    b.close()
    poll_until([a], lambda: len(a.assignment()) == PARTS, "a to own every partition again after b left")
    print("a after b left:", sorted(tp.partition for tp in a.assignment()), flush=True)
    a.commit(offsets=[TopicPartition(TOPIC, p, 5 + p) for p in range(PARTS)], asynchronous=False)
    a.close()
    print("OK", flush=True)
elif phase == "check":
    c = consumer("checker")
    got = c.committed([TopicPartition(TOPIC, p) for p in range(PARTS)], timeout=20)
    offs = {tp.partition: tp.offset for tp in got}
    if offs != {p: 5 + p for p in range(PARTS)}:
        fail(f"committed offsets after restart: {offs}")
    # Offsets of a topic that does not exist are refused and not stored.
    try:
        c.commit(offsets=[TopicPartition("no-such-topic", 0, 3)], asynchronous=False)
        refused = False
    except KafkaException:
        refused = True
    stored = c.committed([TopicPartition("no-such-topic", 0)], timeout=20)[0].offset
    if not refused or stored >= 0:
        fail(f"commit to a missing topic: refused={refused}, stored offset {stored}")
    c.close()
    print("committed offsets survived:", offs, flush=True)
    print("OK", flush=True)
