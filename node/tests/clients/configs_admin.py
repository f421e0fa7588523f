"""Topic and broker configs through the clients' admin APIs: confluent-kafka
(librdkafka) and kafka-python.

Usage: configs_admin.py BOOTSTRAP NODE_ID SECRET run|after-restart

`run` creates topics, describes and alters their configs with both clients,
checks that bad values are refused with an error naming the key, that broker
configs are described without SECRET (a credential in the node's config)
and refused for alteration, that a topic's retention.ms override deletes
its old data while a topic without one keeps it, and that kafka-python
creates a topic with a config, deletes it and no longer lists it.
`after-restart` checks that the override set in `run` survived a restart.
Prints one line per check and exits non-zero on the first failure.
"""
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   NewTopic, ResourceType)
from kafka.admin import ConfigResource as KpResource
from kafka.admin import ConfigResourceType, KafkaAdminClient
import kafka.errors as kp_errors

bootstrap, node_id, secret, phase = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
TIMEOUT = 20
DYNAMIC_TOPIC_CONFIG, STATIC_BROKER_CONFIG, DEFAULT_CONFIG = 1, 4, 5
CK_TOPIC, KEEP_TOPIC, KP_TOPIC = "cfg-ck", "cfg-keep", "cfg-kp"


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)
    print("ok:", msg, flush=True)


def source(entry):
    return int(getattr(entry.source, "value", entry.source))


admin = AdminClient({"bootstrap.servers": bootstrap})


def describe(restype, name):
    res = ConfigResource(restype, name)
    (fut,) = admin.describe_configs([res], request_timeout=TIMEOUT).values()
    return fut.result(timeout=TIMEOUT)


def incremental(name, entries):
    res = ConfigResource(ResourceType.TOPIC, name, incremental_configs=entries)
    (fut,) = admin.incremental_alter_configs([res], request_timeout=TIMEOUT).values()
    return fut.result(timeout=TIMEOUT)


def refused(fn, *words):
    """Runs fn, which must fail with an error whose text has every word."""
    try:
        fn()
    except KafkaException as e:
        text = str(e.args[0].str() if e.args else e)
        for w in words:
            if w not in text:
                fail(f"error {text!r} does not mention {w!r}")
        return text
    fail(f"expected an error mentioning {words}")


def ck_phase():
    for t, f in admin.create_topics([NewTopic(CK_TOPIC, 2, 1), NewTopic(KEEP_TOPIC, 2, 1)]).items():
        f.result(timeout=TIMEOUT)
    c = describe(ResourceType.TOPIC, CK_TOPIC)
    for key in ["retention.ms", "retention.bytes", "cleanup.policy", "compression.type",
                "max.message.bytes", "min.insync.replicas", "segment.bytes",
                "message.timestamp.type"]:
        check(key in c, f"confluent: topic config {key} is described")
    # The node runs with log.retention.ms=-1, which is not Kafka's default.
    check(c["retention.ms"].value == "-1" and source(c["retention.ms"]) == STATIC_BROKER_CONFIG,
          f"confluent: retention.ms is the node's -1, STATIC_BROKER_CONFIG ({c['retention.ms']})")
    check(c["cleanup.policy"].value == "delete" and source(c["cleanup.policy"]) == DEFAULT_CONFIG,
          "confluent: cleanup.policy=delete, DEFAULT_CONFIG")
    check(c["compression.type"].value == "producer", "confluent: compression.type=producer")

    incremental(CK_TOPIC, [ConfigEntry("retention.ms", "1000",
                                       incremental_operation=AlterConfigOpType.SET)])
    c = describe(ResourceType.TOPIC, CK_TOPIC)
    e = c["retention.ms"]
    check(e.value == "1000" and source(e) == DYNAMIC_TOPIC_CONFIG and not e.is_default,
          f"confluent: retention.ms=1000 after SET, DYNAMIC_TOPIC_CONFIG ({e})")
    syn = {s.name: s for s in (e.synonyms or {}).values()} if isinstance(e.synonyms, dict) \
        else {s.name: s for s in (e.synonyms or [])}
    check("log.retention.ms" in syn, f"confluent: retention.ms has synonym log.retention.ms ({list(syn)})")
    other = describe(ResourceType.TOPIC, KEEP_TOPIC)["retention.ms"]
    check(other.value == "-1", "confluent: the other topic keeps the node's retention.ms")

    # validate_only changes nothing.
    res = ConfigResource(ResourceType.TOPIC, CK_TOPIC, incremental_configs=[
        ConfigEntry("retention.bytes", "4096", incremental_operation=AlterConfigOpType.SET)])
    (fut,) = admin.incremental_alter_configs([res], validate_only=True).values()
    fut.result(timeout=TIMEOUT)
    check(describe(ResourceType.TOPIC, CK_TOPIC)["retention.bytes"].value == "-1",
          "confluent: validate_only leaves retention.bytes alone")

    refused(lambda: incremental(CK_TOPIC, [ConfigEntry(
        "retention.ms", "soon", incremental_operation=AlterConfigOpType.SET)]), "retention.ms", "expected")
    check(True, "confluent: retention.ms=soon is refused, naming the key")
    refused(lambda: incremental(CK_TOPIC, [ConfigEntry(
        "cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET)]),
        "cleanup.policy", "compaction")
    check(True, "confluent: cleanup.policy=compact is refused: compaction is not supported")
    refused(lambda: incremental(CK_TOPIC, [ConfigEntry(
        "flush.messages", "1", incremental_operation=AlterConfigOpType.SET)]), "flush.messages")
    check(True, "confluent: an unknown key is refused, naming it")
    refused(lambda: incremental(CK_TOPIC, [ConfigEntry(
        "retention.ms", "5", incremental_operation=AlterConfigOpType.APPEND)]), "retention.ms")
    check(True, "confluent: APPEND to a non-list key is refused")
    check(describe(ResourceType.TOPIC, CK_TOPIC)["retention.ms"].value == "1000",
          "confluent: refused changes left retention.ms=1000")
    try:
        describe(ResourceType.TOPIC, "no-such-topic")
        fail("describing a missing topic succeeded")
    except KafkaException as e:
        check("UNKNOWN_TOPIC" in str(e), f"confluent: a missing topic is UNKNOWN_TOPIC_OR_PART ({e})")

    # The broker.
    b = describe(ResourceType.BROKER, node_id)
    check(b.get("node.id") is not None and b["node.id"].value == node_id, "confluent: broker node.id")
    check(b["log.retention.ms"].value == "-1", "confluent: broker log.retention.ms=-1")
    check(all(e.is_read_only for k, e in b.items() if k != "automq.zone.cidr.blocks"),
          "confluent: broker configs but the zone table are read-only")
    check(not b["automq.zone.cidr.blocks"].is_read_only, "confluent: the zone table is dynamic")
    # The zone table, altered at this broker (librdkafka refuses the empty
    # name of the cluster defaults; kafka-python's phase uses it).
    cidrs = "zone-a@10.1.0.0/16<>zone-b@10.2.0.0/16"
    res = ConfigResource(ResourceType.BROKER, node_id, incremental_configs=[
        ConfigEntry("automq.zone.cidr.blocks", cidrs, incremental_operation=AlterConfigOpType.SET)])
    (fut,) = admin.incremental_alter_configs([res], request_timeout=TIMEOUT).values()
    fut.result(timeout=TIMEOUT)
    shown = describe(ResourceType.BROKER, node_id)["automq.zone.cidr.blocks"].value
    check(shown == cidrs, f"confluent: the altered zone table is shown ({shown})")
    res = ConfigResource(ResourceType.BROKER, node_id, incremental_configs=[
        ConfigEntry("automq.zone.cidr.blocks", "zone-a@10.1.0.0/99",
                    incremental_operation=AlterConfigOpType.SET)])
    (fut,) = admin.incremental_alter_configs([res], request_timeout=TIMEOUT).values()
    refused(lambda: fut.result(timeout=TIMEOUT), "automq.zone.cidr.blocks")
    check(describe(ResourceType.BROKER, node_id)["automq.zone.cidr.blocks"].value == cidrs,
          "confluent: a bad zone table is refused, naming the key, and changes nothing")
    check(all(secret not in (e.value or "") for e in b.values()),
          "confluent: no broker value contains the secret")
    check("[redacted]" in (b["s3.data.buckets"].value or ""),
          f"confluent: s3.data.buckets shows a redacted credential ({b['s3.data.buckets'].value})")
    res = ConfigResource(ResourceType.BROKER, node_id, incremental_configs=[
        ConfigEntry("log.retention.ms", "5", incremental_operation=AlterConfigOpType.SET)])
    (fut,) = admin.incremental_alter_configs([res], request_timeout=TIMEOUT).values()
    refused(lambda: fut.result(timeout=TIMEOUT), "log.retention.ms", "--override")
    check(True, "confluent: altering a broker config is refused: static, restart with --override")

    # Retention: old records go from the topic with retention.ms=1000 only.
    # Two rounds, so each partition has at least two batches: retention
    # keeps a partition's last batch (it marks where the log ends).
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    for _round in range(2):
        for topic in (CK_TOPIC, KEEP_TOPIC):
            for i in range(20):
                p.produce(topic, value=b"old" * 10, partition=i % 2, timestamp=1_700_000_000_000 + i)
        check(p.flush(30) == 0, "confluent: 40 old records produced")
    cons = Consumer({"bootstrap.servers": bootstrap, "group.id": "cfg-watermarks"})
    deadline = time.time() + 40
    while True:
        lows = [cons.get_watermark_offsets(TopicPartition(CK_TOPIC, i), timeout=10) for i in range(2)]
        if all(lo >= 10 and hi == 20 for lo, hi in lows):
            break
        if time.time() > deadline:
            fail(f"retention.ms=1000 did not delete old data: watermarks {lows}")
        time.sleep(1)
    check(True, f"confluent: retention.ms=1000 deleted the old records ({lows})")
    keep = [cons.get_watermark_offsets(TopicPartition(KEEP_TOPIC, i), timeout=10) for i in range(2)]
    check(all(lo == 0 and hi == 20 for lo, hi in keep),
          f"confluent: the topic without an override kept them ({keep})")
    cons.close()


def kp_phase():
    kp = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="cfg-kp-admin")
    kp.create_topics({KP_TOPIC: {"num_partitions": 1, "replication_factor": 1,
                                 "configs": {"retention.ms": "5000", "cleanup.policy": "delete"}}})
    check(KP_TOPIC in kp.list_topics(), "kafka-python: created a topic with configs")
    res = KpResource(ConfigResourceType.TOPIC, KP_TOPIC)
    d = kp.describe_configs([res], config_filter="all")["topic"][KP_TOPIC]
    check(d["retention.ms"]["value"] == "5000"
          and d["retention.ms"]["config_source"] == "DYNAMIC_TOPIC_CONFIG",
          f"kafka-python: retention.ms=5000 from CreateTopics ({d['retention.ms']})")
    check(d["cleanup.policy"]["config_source"] == "DYNAMIC_TOPIC_CONFIG",
          "kafka-python: cleanup.policy stored from CreateTopics")
    # AlterConfigs (not incremental): every key it names is set.
    r = kp.alter_configs([KpResource(ConfigResourceType.TOPIC, KP_TOPIC,
                                     configs={"retention.ms": "7000"})], incremental=False)
    check(r["topic"][KP_TOPIC] == "OK", f"kafka-python: alter_configs retention.ms=7000 ({r})")
    d = kp.describe_configs([res], config_filter="all")["topic"][KP_TOPIC]
    check(d["retention.ms"]["value"] == "7000", "kafka-python: describe shows retention.ms=7000")
    r = kp.alter_configs([KpResource(ConfigResourceType.TOPIC, KP_TOPIC,
                                     configs={"retention.bytes": "lots"})], incremental=False)
    check("retention.bytes" in r["topic"][KP_TOPIC] and "InvalidConfig" in r["topic"][KP_TOPIC],
          f"kafka-python: retention.bytes=lots refused, naming the key ({r})")
    # Broker configs through kafka-python.
    b = kp.describe_configs([KpResource(ConfigResourceType.BROKER, node_id)],
                            config_filter="all")["broker"][node_id]
    check(b["node.id"]["value"] == node_id, "kafka-python: broker node.id")
    check(all(secret not in str(v.get("value")) for v in b.values()),
          "kafka-python: no broker value contains the secret")
    # The zone table through kafka-python (which, like librdkafka, refuses
    # the cluster defaults' empty name; node/tests/zones.rs sends that raw).
    cidrs = "zone-c@192.168.0.0/16,fd00::/8"
    r = kp.alter_configs([KpResource(ConfigResourceType.BROKER, node_id,
                                     configs={"automq.zone.cidr.blocks": cidrs})], incremental=False)
    check(list(r["broker"].values()) == ["OK"], f"kafka-python: zone table set ({r})")
    b = kp.describe_configs([KpResource(ConfigResourceType.BROKER, node_id)],
                            config_filter="all")["broker"][node_id]
    check(b["automq.zone.cidr.blocks"]["value"] == cidrs,
          f"kafka-python: the broker shows the cluster's zone table ({b['automq.zone.cidr.blocks']})")
    # CreateTopics refuses a bad config and creates nothing.
    out = kp.create_topics({"cfg-bad": {"num_partitions": 1, "replication_factor": 1,
                                        "configs": {"cleanup.policy": "compact"}}},
                           raise_errors=False)
    t = out["topics"][0]
    check(t["error_code"] == kp_errors.InvalidConfigurationError.errno
          and "cleanup.policy" in (t["error_message"] or ""),
          f"kafka-python: CreateTopics with cleanup.policy=compact is refused ({t})")
    check("cfg-bad" not in kp.list_topics(), "kafka-python: the refused topic does not exist")
    kp.delete_topics([KP_TOPIC])
    deadline = time.time() + 10
    while KP_TOPIC in kp.list_topics():
        if time.time() > deadline:
            fail("deleted topic still listed")
        time.sleep(0.2)
    check(True, "kafka-python: the deleted topic is no longer listed")
    kp.close()


if phase == "run":
    ck_phase()
    kp_phase()
elif phase == "after-restart":
    e = describe(ResourceType.TOPIC, CK_TOPIC)["retention.ms"]
    check(e.value == "1000" and source(e) == DYNAMIC_TOPIC_CONFIG,
          f"after restart: retention.ms=1000, DYNAMIC_TOPIC_CONFIG ({e})")
    kp = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="cfg-kp-admin")
    check(KP_TOPIC not in kp.list_topics(), "after restart: the deleted topic stays deleted")
    kp.close()
else:
    fail(f"unknown phase {phase}")
print("OK: configs through confluent-kafka and kafka-python", flush=True)
