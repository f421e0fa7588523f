//! `ferry-bench blast` end to end against the debug `ferry dev` that
//! `cargo test --workspace` builds beside this package's binary: each
//! partition holds exactly as many records as blast counts as acknowledged
//! for it. (Blast sends one pre-encoded request again and again, so records
//! cannot be told apart by content: a lost and a duplicated request of the
//! same partition would cancel out. Ferry's own crash checker, with
//! distinct records, checks each acknowledged record once at its offset.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ferry_binary, run_bounded, BIN};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the node when the test ends, however it ends.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn each_partition_holds_as_many_records_as_were_acknowledged_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _node = Node(
        Command::new(ferry_binary())
            .args(["dev", "--port", &port.to_string(), "--dir"])
            .arg(dir.path().join("node"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(&addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "ferry dev did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let json = dir.path().join("blast.json");
    let (out, _) = run_bounded(
        Command::new(BIN)
            .args(["blast", "--bootstrap", &addr, "--topic", "blasted"])
            .args([
                "--partitions",
                "3",
                "--batch-records",
                "20",
                "--record-bytes",
                "200",
            ])
            .args(["--connections", "2", "--in-flight", "4"])
            .args(["--warmup-secs", "1", "--duration-secs", "2", "--json"])
            .arg(&json),
        Duration::from_secs(90),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("] acked"), "no progress line:\n{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    assert!(
        report["records_per_sec"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert!(report["latency"]["count"].as_u64().unwrap() > 0, "{report}");
    let acked = report["acked_total"].as_u64().unwrap();
    // Whole requests of 3 x 20 records.
    assert!(acked > 0 && acked % 60 == 0, "{acked}");

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .set("group.id", "blast-check")
        .create()
        .unwrap();
    // Every request carries 20 records for each of the 3 partitions.
    for p in 0..3 {
        let (low, high) = consumer
            .fetch_watermarks("blasted", p, Duration::from_secs(10))
            .unwrap();
        assert_eq!(low, 0);
        assert_eq!(
            high,
            acked as i64 / 3,
            "partition {p} holds what was acknowledged for it"
        );
    }
}

#[test]
fn a_request_larger_than_64_mib_is_refused_before_connecting() {
    let (out, _) = run_bounded(
        Command::new(BIN).args([
            "blast",
            "--bootstrap",
            "127.0.0.1:1",
            "--batch-records",
            "100000",
            "--record-bytes",
            "1024",
        ]),
        Duration::from_secs(10),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--batch-records"), "{stderr}");
}
