"""Reads a topic written by produce_consume.py back from the start and checks
every record is there, in order, with dense offsets.

Usage: consume_check.py BOOTSTRAP TOPIC COUNT
"""
import sys
import time

from confluent_kafka import Consumer, TopicPartition

bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{topic}", "enable.auto.commit": False})
c.assign([TopicPartition(topic, p, 0) for p in range(3)])
seen = {}
end = time.time() + 60
while len(seen) < count and time.time() < end:
    m = c.poll(1.0)
    if m is None or m.error():
        continue
    i = int(m.key().decode().split("-")[1])
    if m.value() != f"value-{i}".encode() * 10:
        print(f"FAIL: value of {i}", flush=True)
        sys.exit(1)
    seen[(m.partition(), m.offset())] = i
c.close()
if len(seen) != count:
    print(f"FAIL: read {len(seen)} of {count}", flush=True)
    sys.exit(1)
for p in range(3):
    offs = sorted(o for (pp, o) in seen if pp == p)
    if offs != list(range(len(offs))):
        print(f"FAIL: partition {p} offsets not dense", flush=True)
        sys.exit(1)
print(f"OK: {count} records read back after restart", flush=True)
