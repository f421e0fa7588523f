//! Golden bytes: request frames captured from real clients (librdkafka
//! through confluent-kafka, and kafka-python) by `tests/golden/capture.py`
//! against `examples/capture_broker.rs`, decoded here to the fields the
//! capture script set.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use ferry_protocol::frame::{decode_request, decode_versioned, Request, SupportedApis};
use ferry_protocol::messages::consumer_protocol_assignment::ConsumerProtocolAssignment;
use ferry_protocol::messages::consumer_protocol_subscription::ConsumerProtocolSubscription;
use ferry_protocol::messages::RequestBody;
use ferry_protocol::records::RecordBatches;
use std::path::{Path, PathBuf};

const CLIENTS: [&str; 2] = ["golden-librdkafka", "golden-kafka-python"];
const TOPIC: &str = "golden-topic";
const GROUP: &str = "golden-group";

fn fixtures(client: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/fixtures")
        .join(client)
}

/// Every captured frame of `api` for `client`, decoded, with its file name.
fn frames(client: &str, api: &str) -> Vec<(String, Request)> {
    let dir = fixtures(client);
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.split('-').next() != Some(api) {
            continue;
        }
        let frame = Bytes::from(std::fs::read(&path).unwrap());
        let req = decode_request(&frame, &SupportedApis::all())
            .unwrap_or_else(|e| panic!("{name} of {client}: {e}"));
        assert_eq!(req.header.client_id.as_deref(), Some(client), "{name}");
        out.push((name, req));
    }
    assert!(
        !out.is_empty(),
        "no {api} frame captured for {client} in {}",
        dir.display()
    );
    out
}

#[test]
fn api_versions_names_the_client_software() {
    for client in CLIENTS {
        for (name, req) in frames(client, "ApiVersions") {
            let v = req.api_version();
            let RequestBody::ApiVersions(b) = req.body else {
                panic!("{name}")
            };
            if v >= 3 {
                assert!(!b.client_software_name.is_empty(), "{name}: {b:?}");
                assert!(!b.client_software_version.is_empty(), "{name}: {b:?}");
            }
        }
    }
}

#[test]
fn metadata_asks_for_the_topic() {
    for client in CLIENTS {
        let all = frames(client, "Metadata");
        let asked = all.iter().any(|(_, req)| match &req.body {
            RequestBody::Metadata(m) => m
                .topics
                .iter()
                .flatten()
                .any(|t| t.name.as_deref() == Some(TOPIC)),
            _ => false,
        });
        assert!(asked, "{client}: no Metadata request names {TOPIC}");
    }
}

#[test]
fn produce_carries_three_records_with_keys_values_and_headers() {
    for client in CLIENTS {
        for (name, req) in frames(client, "Produce") {
            let RequestBody::Produce(p) = req.body else {
                panic!("{name}")
            };
            assert_eq!(p.acks, -1, "{name}: acks=all");
            assert_eq!(p.topic_data.len(), 1, "{name}");
            assert_eq!(p.topic_data[0].name, TOPIC, "{name}");
            let part = &p.topic_data[0].partition_data[0];
            assert_eq!(part.index, 0);
            let records = part.records.as_ref().expect("records").to_bytes();
            let mut keys = Vec::new();
            for batch in RecordBatches::new(records) {
                let batch = batch.unwrap_or_else(|e| panic!("{name}: {e}"));
                batch.verify_crc().unwrap_or_else(|e| panic!("{name}: {e}"));
                for r in batch.records().unwrap() {
                    let r = r.unwrap();
                    let key = String::from_utf8(r.key().unwrap().to_vec()).unwrap();
                    let value = String::from_utf8(r.value().unwrap().to_vec()).unwrap();
                    assert_eq!(value, format!("value-{}", &key[4..]), "{name}");
                    let headers: Vec<_> = r.headers().map(|h| h.unwrap()).collect();
                    assert_eq!(headers.len(), 1, "{name}");
                    assert_eq!(headers[0].key(), b"golden-header");
                    assert_eq!(
                        headers[0].value(),
                        Some(format!("header-{}", &key[4..]).as_bytes())
                    );
                    assert!(
                        r.timestamp(batch.base_timestamp()) > 1_600_000_000_000,
                        "{name}"
                    );
                    keys.push(key);
                }
            }
            assert_eq!(keys, ["key-0", "key-1", "key-2"], "{name}");
        }
    }
}

#[test]
fn group_requests_name_the_group_and_topic() {
    for client in CLIENTS {
        let fc = frames(client, "FindCoordinator");
        assert!(
            fc.iter().any(|(_, r)| match &r.body {
                RequestBody::FindCoordinator(f) =>
                    f.key == GROUP || f.coordinator_keys.iter().any(|k| k == GROUP),
                _ => false,
            }),
            "{client}: no FindCoordinator for {GROUP}"
        );
        for (name, req) in frames(client, "JoinGroup") {
            let RequestBody::JoinGroup(j) = req.body else {
                panic!("{name}")
            };
            assert_eq!(j.group_id, GROUP, "{name}");
            assert_eq!(j.protocol_type, "consumer", "{name}");
            assert!(!j.protocols.is_empty(), "{name}");
            for p in &j.protocols {
                let (_, sub): (_, ConsumerProtocolSubscription) = decode_versioned(&p.metadata)
                    .unwrap_or_else(|e| panic!("{name} {}: {e}", p.name));
                assert_eq!(sub.topics, [TOPIC], "{name} {}", p.name);
            }
        }
        for (name, req) in frames(client, "SyncGroup") {
            let RequestBody::SyncGroup(s) = req.body else {
                panic!("{name}")
            };
            assert_eq!(s.group_id, GROUP, "{name}");
            assert_eq!(s.generation_id, 1, "{name}");
            assert_eq!(s.assignments.len(), 1, "{name}: the leader assigns");
            let (_, a): (_, ConsumerProtocolAssignment) =
                decode_versioned(&s.assignments[0].assignment).unwrap();
            assert_eq!(a.assigned_partitions.len(), 1, "{name}");
            assert_eq!(a.assigned_partitions[0].topic, TOPIC, "{name}");
            assert_eq!(a.assigned_partitions[0].partitions, [0], "{name}");
        }
        let commits = frames(client, "OffsetCommit");
        let committed = commits.iter().any(|(_, r)| match &r.body {
            RequestBody::OffsetCommit(o) => {
                o.group_id == GROUP
                    && o.topics.iter().any(|t| {
                        t.name == TOPIC
                            && t.partitions
                                .iter()
                                .any(|p| p.partition_index == 0 && p.committed_offset == 1)
                    })
            }
            _ => false,
        });
        assert!(committed, "{client}: no OffsetCommit of {TOPIC}/0 at 1");
    }
}

#[test]
fn fetch_asks_for_partition_zero() {
    for client in CLIENTS {
        for (name, req) in frames(client, "Fetch") {
            let v = req.api_version();
            let RequestBody::Fetch(f) = req.body else {
                panic!("{name}")
            };
            assert_eq!(f.topics.len(), 1, "{name}");
            let t = &f.topics[0];
            if v >= 13 {
                // Topic ids from the capture broker's metadata: [1; 16].
                assert_eq!(t.topic_id.0, [1; 16], "{name}");
            } else {
                assert_eq!(t.topic, TOPIC, "{name}");
            }
            assert_eq!(t.partitions[0].partition, 0, "{name}");
            assert!(f.max_wait_ms > 0, "{name}");
        }
    }
}

#[test]
fn create_topics_names_the_topic() {
    for client in CLIENTS {
        for (name, req) in frames(client, "CreateTopics") {
            let RequestBody::CreateTopics(c) = req.body else {
                panic!("{name}")
            };
            assert_eq!(c.topics.len(), 1, "{name}");
            assert_eq!(c.topics[0].name, TOPIC, "{name}");
            assert_eq!(c.topics[0].num_partitions, 1, "{name}");
        }
    }
}

#[test]
fn every_fixture_decodes_and_reencodes_to_the_same_bytes() {
    let mut n = 0;
    // Every client captured, kcat (Debian's librdkafka 2.0) included.
    for client in ["golden-librdkafka", "golden-kafka-python", "golden-kcat"] {
        for e in std::fs::read_dir(fixtures(client)).unwrap() {
            let path = e.unwrap().path();
            let frame = Bytes::from(std::fs::read(&path).unwrap());
            let req = decode_request(&frame, &SupportedApis::all()).unwrap();
            let again = ferry_protocol::frame::encode_request(
                req.correlation_id(),
                req.header.client_id.as_deref(),
                req.api_version(),
                &req.body,
            )
            .unwrap();
            assert_eq!(
                ferry_protocol::frame::concat(&again).slice(4..),
                frame,
                "{} does not re-encode to the captured bytes",
                path.display()
            );
            n += 1;
        }
    }
    println!("golden: {n} captured frames decode and re-encode byte for byte");
    assert!(n >= 25, "only {n} fixtures");
}
