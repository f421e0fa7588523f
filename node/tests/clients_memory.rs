//! A real client (librdkafka through confluent-kafka) against a node whose
//! durable log is in memory: produce with every codec, consume, compare.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferry_node::broker::server;
use ferry_node::node::NodeSettings;
use ferry_node::storage::durable::MemoryLog;
use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

fn settings() -> NodeSettings {
    NodeSettings {
        num_partitions: 3,
        ..NodeSettings::local(1)
    }
}

fn run_client(bootstrap: &str, topic: &str, count: usize, codec: &str) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/produce_consume.py"
    );
    let mut child = Command::new("python3")
        .args([script, bootstrap, topic, &count.to_string(), codec])
        .spawn()
        .expect("python3 must be installed (scripts/test.sh installs confluent-kafka)");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "client failed for {codec}: {status}");
            return;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("client timed out for {codec}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn librdkafka_produces_and_consumes_with_every_codec() {
    let _ = tracing_subscriber::fmt().with_env_filter("info").try_init();
    let node = server::start(
        settings(),
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(MemoryLog::new()),
        Default::default(),
        HashMap::new(),
    )
    .unwrap();
    let bootstrap = node.addr.to_string();
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        run_client(&bootstrap, &format!("codec-{codec}"), 300, codec);
    }
    node.stop();
}
