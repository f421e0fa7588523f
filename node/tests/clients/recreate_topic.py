"""A topic deleted and created again under the same name starts empty, and
stays so across a restart.

Usage: recreate_topic.py BOOTSTRAP run|check
"""
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap, phase = sys.argv[1], sys.argv[2]
TOPIC = "again"


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def produce(values):
    got = []
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for v in values:
        p.produce(TOPIC, value=v.encode(), partition=0,
                  on_delivery=lambda err, m: got.append((err, m.offset())))
    if p.flush(30):
        fail("produce did not finish")
    if any(e for e, _ in got):
        fail(f"produce errors: {got}")
    return sorted(o for _, o in got)


def read_all():
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "reader", "enable.auto.commit": False})
    c.assign([TopicPartition(TOPIC, 0, 0)])
    out = []
    end = time.time() + 10
    while time.time() < end:
        m = c.poll(0.5)
        if m is not None and not m.error():
            out.append((m.offset(), m.value().decode()))
    c.close()
    return out


admin = AdminClient({"bootstrap.servers": bootstrap})
if phase == "run":
    for _, f in admin.create_topics([NewTopic(TOPIC, 2, 1)]).items():
        f.result(timeout=20)
    if produce([f"old-{i}" for i in range(10)]) != list(range(10)):
        fail("first incarnation offsets")
    for _, f in admin.delete_topics([TOPIC]).items():
        f.result(timeout=20)
    end = time.time() + 20
    while TOPIC in admin.list_topics(timeout=10).topics and time.time() < end:
        time.sleep(0.2)
    for _, f in admin.create_topics([NewTopic(TOPIC, 2, 1)]).items():
        f.result(timeout=20)
    offs = produce([f"new-{i}" for i in range(3)])
    if offs != [0, 1, 2]:
        fail(f"the new topic must start at offset 0: {offs}")
got = read_all()
if got != [(i, f"new-{i}") for i in range(3)]:
    fail(f"{phase}: expected only the new topic's 3 records, got {got}")
print(f"OK ({phase}): the recreated topic holds only its own records", flush=True)
