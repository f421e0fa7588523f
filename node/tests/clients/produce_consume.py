"""Produce and consume through a real client (confluent-kafka, i.e.
librdkafka), checking keys, values, headers, timestamps and offsets.

Usage: produce_consume.py BOOTSTRAP TOPIC COUNT [COMPRESSION]
Prints one line per check and exits non-zero on the first failure.
"""
import sys
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
codec = sys.argv[4] if len(sys.argv) > 4 else "none"
DEADLINE_S = 60


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


admin = AdminClient({"bootstrap.servers": bootstrap})
for t, f in admin.create_topics([NewTopic(topic, 3, 1)]).items():
    try:
        f.result(timeout=20)
    except Exception as e:  # noqa: BLE001
        fail(f"create topic {t}: {e}")
print("created", topic, flush=True)

acked = {}
errors = []


def on_delivery(err, msg):
    if err is not None:
        errors.append(str(err))
    else:
        acked[(msg.partition(), msg.offset())] = msg.key()


p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "compression.type": codec,
              "linger.ms": 5, "enable.idempotence": True})
for i in range(count):
    p.produce(topic, key=f"key-{i}".encode(), value=f"value-{i}".encode() * 10,
              headers=[("h", f"hv-{i}".encode())], timestamp=1_700_000_000_000 + i,
              partition=i % 3, on_delivery=on_delivery)
left = p.flush(DEADLINE_S)
if left or errors:
    fail(f"{left} unflushed, errors {errors[:3]}")
if len(acked) != count:
    fail(f"{len(acked)} acknowledged of {count}")
print("acknowledged", len(acked), flush=True)

c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{topic}", "enable.auto.commit": False,
              "auto.offset.reset": "earliest"})
c.assign([TopicPartition(topic, p, 0) for p in range(3)])
seen = {}
end = time.time() + DEADLINE_S
while len(seen) < count and time.time() < end:
    m = c.poll(1.0)
    if m is None:
        continue
    if m.error():
        if m.error().code() == KafkaError._PARTITION_EOF:
            continue
        fail(f"consume: {m.error()}")
    i = int(m.key().decode().split("-")[1])
    if m.value() != f"value-{i}".encode() * 10:
        fail(f"value of {i}")
    if m.headers() != [("h", f"hv-{i}".encode())]:
        fail(f"headers of {i}: {m.headers()}")
    if m.timestamp()[1] != 1_700_000_000_000 + i:
        fail(f"timestamp of {i}: {m.timestamp()}")
    if acked.get((m.partition(), m.offset())) != m.key():
        fail(f"record {i} at {m.partition()}/{m.offset()} was acknowledged elsewhere")
    seen[(m.partition(), m.offset())] = i
c.close()
if len(seen) != count:
    fail(f"consumed {len(seen)} of {count}")
for part in range(3):
    offs = sorted(o for (p_, o) in seen if p_ == part)
    if offs != list(range(len(offs))):
        fail(f"partition {part}: offsets not dense from 0: {offs[:5]}...")
print("consumed", len(seen), "with dense offsets", flush=True)
print("OK", flush=True)
