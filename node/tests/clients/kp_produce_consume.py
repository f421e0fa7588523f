"""kafka-python produces and consumes with one compression codec; keys,
values, headers and timestamps must come back intact at their offsets.

Usage: kp_produce_consume.py BOOTSTRAP TOPIC COUNT CODEC
"""
import sys
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

bootstrap, topic, count, codec = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]


def fail(msg):
    print(f"FAIL [{codec}]: {msg}", flush=True)
    sys.exit(1)


admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="kp-admin")
admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
admin.close()

p = KafkaProducer(bootstrap_servers=bootstrap, acks="all",
                  compression_type=None if codec == "none" else codec, linger_ms=5)
futures = []
for i in range(count):
    futures.append((i, p.send(topic, key=f"key-{i}".encode(), value=f"value-{i}".encode() * 8,
                              headers=[("h", f"hv-{i}".encode())], partition=i % 2,
                              timestamp_ms=1_700_000_000_000 + i)))
p.flush(timeout=60)
acked = {}
for i, f in futures:
    md = f.get(timeout=30)
    acked[(md.partition, md.offset)] = i
p.close()
if len(acked) != count:
    fail(f"{len(acked)} acknowledged of {count}")

c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
                  consumer_timeout_ms=2000)
c.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
c.seek_to_beginning()
seen = {}
end = time.time() + 60
while len(seen) < count and time.time() < end:
    for m in c:
        i = int(m.key.decode().split("-")[1])
        if m.value != f"value-{i}".encode() * 8:
            fail(f"value of {i}")
        if list(m.headers) != [("h", f"hv-{i}".encode())]:
            fail(f"headers of {i}: {m.headers}")
        if m.timestamp != 1_700_000_000_000 + i:
            fail(f"timestamp of {i}: {m.timestamp}")
        if acked.get((m.partition, m.offset)) != i:
            fail(f"record {i} at {m.partition}/{m.offset} was acknowledged elsewhere")
        seen[(m.partition, m.offset)] = i
c.close()
if len(seen) != count:
    fail(f"consumed {len(seen)} of {count}")
print(f"OK [{codec}]: {count} records round trip through kafka-python", flush=True)
