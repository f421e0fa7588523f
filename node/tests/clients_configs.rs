//! Topic and broker configs described and altered through the clients'
//! admin APIs (confluent-kafka and kafka-python), against a node whose
//! durable log is in memory. The overrides are persisted in the topic table:
//! a node started again from that table still has them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use ferry_node::broker::server;
use ferry_node::cluster::topics::TopicTable;
use ferry_node::config::{Config, HostEnv};
use ferry_node::node::NodeSettings;
use ferry_node::storage::durable::{MemoryLog, MetaStore};
use std::collections::HashMap;
use std::sync::Arc;

/// A credential in the node's config: it must never reach a client.
const SECRET: &str = "TOPSECRETvalue42";

fn settings(config: &Config) -> NodeSettings {
    NodeSettings {
        shards: 2,
        cache_bytes_max: 64 << 20,
        ..NodeSettings::from_config(config).unwrap()
    }
}

fn persisted_topics(log: &MemoryLog) -> TopicTable {
    let bytes = futures_lite::future::block_on(log.get_meta("topics"))
        .unwrap()
        .unwrap()
        .expect("the topic table was persisted");
    TopicTable::decode(&bytes).unwrap()
}

#[test]
fn configs_are_described_and_altered_through_admin_clients() {
    let _ = tracing_subscriber::fmt().with_env_filter("info").try_init();
    let bucket = format!("0@s3://bucket?region=us-east-1&accessKey=AKIDEXAMPLE&secretKey={SECRET}");
    let config = Config::from_pairs(
        [
            ("node.id", "1"),
            ("listeners", "PLAINTEXT://127.0.0.1:0"),
            ("num.partitions", "2"),
            ("log.retention.ms", "-1"),
            ("s3.data.buckets", bucket.as_str()),
        ],
        HostEnv::detect(),
    )
    .unwrap();
    let log = Arc::new(MemoryLog::new());
    let node = server::start(
        settings(&config),
        log.clone(),
        Default::default(),
        HashMap::new(),
    )
    .unwrap();
    common::python(
        "configs_admin.py",
        &[&node.addr.to_string(), "1", SECRET, "run"],
        180,
    );
    node.stop();

    // The overrides were persisted with the topic table, deletions too.
    let table = persisted_topics(&log);
    let ck = table.get("cfg-ck").expect("cfg-ck persisted");
    assert_eq!(
        ck.configs.get("retention.ms").map(String::as_str),
        Some("1000")
    );
    assert!(table.get("cfg-keep").unwrap().configs.is_empty());
    assert!(table.get("cfg-kp").is_none(), "deleted topic persisted");
    assert!(table.get("cfg-bad").is_none(), "refused topic persisted");

    // A node started from the persisted table still has them.
    let node = server::start(settings(&config), log.clone(), table, HashMap::new()).unwrap();
    common::python(
        "configs_admin.py",
        &[&node.addr.to_string(), "1", SECRET, "after-restart"],
        60,
    );
    node.stop();
}
