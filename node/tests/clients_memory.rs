//! A real client (librdkafka through confluent-kafka) against a node whose
//! durable log is in memory: produce with every codec, consume, compare.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::python;
use ferry_node::broker::server;
use ferry_node::node::NodeSettings;
use ferry_node::storage::durable::MemoryLog;
use std::collections::HashMap;
use std::sync::Arc;

fn settings() -> NodeSettings {
    NodeSettings {
        num_partitions: 3,
        ..NodeSettings::local(1)
    }
}

#[test]
fn librdkafka_produces_and_consumes_with_every_codec() {
    let _ = tracing_subscriber::fmt().with_env_filter("info").try_init();
    let node = server::start(
        settings(),
        Arc::new(MemoryLog::new()),
        Default::default(),
        HashMap::new(),
    )
    .unwrap();
    let bootstrap = node.addr.to_string();
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        python(
            "produce_consume.py",
            &[&bootstrap, &format!("codec-{codec}"), "300", codec],
            120,
        );
    }
    node.stop();
}
