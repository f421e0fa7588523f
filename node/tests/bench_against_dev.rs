//! The load generator (`ferry-bench`, librdkafka) against a real `ferry dev`
//! process: a short fixed-rate run with producers and consumers in two zone
//! tags, checking what it reports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::{free_port, wait_bounded, DevNode};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

fn bench_binary() -> PathBuf {
    // `cargo test --workspace` builds every binary of the workspace into the
    // same directory as this package's own.
    let ferry = PathBuf::from(env!("CARGO_BIN_EXE_ferry"));
    let bench = ferry.with_file_name("ferry-bench");
    assert!(
        bench.exists(),
        "{} is missing: run `cargo build -p ferry-bench` (cargo test --workspace does)",
        bench.display()
    );
    bench
}

#[test]
fn a_short_fixed_rate_run_reports_latency_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(dir.path(), free_port(), &[]);
    let bootstrap = node.bootstrap();
    let json = dir.path().join("run.json");
    let mut child = Command::new(bench_binary())
        .args([
            "run",
            "--zone",
            &format!("az1={bootstrap}"),
            "--zone",
            &format!("az2={bootstrap}"),
        ])
        .args([
            "--topic",
            "bench-test",
            "--partitions",
            "3",
            "--rate",
            "500",
        ])
        .args([
            "--producers",
            "2",
            "--consumers",
            "2",
            "--warmup-secs",
            "1",
            "--duration-secs",
            "3",
        ])
        .args(["--drain-secs", "20", "--json"])
        .arg(&json)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ferry-bench");
    wait_bounded(&mut child, "ferry-bench", Duration::from_secs(120));
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("[measure"), "no progress line:\n{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let publish = &report["publish"];
    let acked = publish["records_acked"].as_u64().unwrap();
    // 500 records/s for 4 s in all.
    assert!((1_800..=2_000).contains(&acked), "acked {acked}");
    assert_eq!(publish["records_failed"], 0);
    let measured = publish["latency"]["count"].as_u64().unwrap();
    assert!((1_400..=1_500).contains(&measured), "measured {measured}");
    // Acknowledged only once the 250 ms WAL object is in the bucket.
    let p50 = publish["latency"]["p50_ms"].as_f64().unwrap();
    assert!(p50 > 1.0 && p50 < 1_000.0, "publish p50 {p50} ms");
    let e2e = &report["end_to_end"];
    assert_eq!(e2e["records_missing"], 0);
    assert_eq!(e2e["records_consumed"].as_u64().unwrap(), acked);
}
