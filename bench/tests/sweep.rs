//! `ferry-bench sweep` end to end: a 1 x 1 grid against the debug `ferry`
//! that `cargo test --workspace` builds beside this package's binary, with a
//! constant 60 ms PUT latency, checking that the model took effect, that the
//! PUT rate follows `batchInterval`, that every output file is written, and
//! that the node's directory is gone afterwards; and the same point across
//! two zones, checking the same/cross split and the cross-zone bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ferry_binary, run_bounded, BIN};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Runs `ferry-bench sweep` with `args` (plus the output and work
/// directories), at most `limit`; returns the point's JSON and stderr.
fn sweep(args: &[&str], limit: Duration) -> (serde_json::Value, String) {
    let out = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (output, _) = run_bounded(
        Command::new(BIN)
            .arg("sweep")
            .arg("--ferry")
            .arg(ferry_binary())
            .args(args)
            .arg("--out-dir")
            .arg(out.path())
            .arg("--work-dir")
            .arg(work.path()),
        limit,
    );
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(output.status.success(), "{stderr}");
    let dir = std::fs::read_dir(out.path())
        .unwrap()
        .next()
        .expect("a results directory")
        .unwrap()
        .path();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("sweep.json")).unwrap()).unwrap();
    assert!(dir.join("zones.svg").is_file() || !args.contains(&"--zones"));
    let left: Vec<_> = std::fs::read_dir(work.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    (json["points"][0].clone(), stderr)
}

#[test]
fn a_one_point_sweep_across_two_zones() {
    // Two zones of one node, 4 partitions (leaders spread over both zones),
    // 2 producers (one per zone), 1 consumer in az1, 60 ms PUTs.
    let (point, stderr) = sweep(
        &[
            "--zones",
            "2",
            "--batch-interval-ms",
            "50",
            "--max-bytes-mib",
            "1",
            "--rate",
            "200",
            "--record-bytes",
            "1000",
            "--partitions",
            "4",
            "--producers",
            "2",
            "--consumers",
            "1",
            "--warmup-secs",
            "1",
            "--duration-secs",
            "3",
            "--drain-secs",
            "10",
            "--put-p50-ms",
            "60",
            "--put-p99-ms",
            "60",
            "--get-p50-ms",
            "5",
            "--get-p99-ms",
            "10",
            "--ms-per-mib",
            "0",
            "--name",
            "zones",
        ],
        Duration::from_secs(120),
    );
    let m = &point["measured"];
    assert!(m.is_object(), "point failed: {}", point["error"]);
    assert!(stderr.contains("cross/same p99"), "{stderr}");
    let paths = &m["run"]["paths"];
    let leaders = paths["leaders"].as_array().unwrap();
    assert_eq!(leaders.len(), 4);
    let zones: Vec<&str> = leaders
        .iter()
        .map(|l| l["zone"].as_str().expect("every leader's zone is known"))
        .collect();
    assert!(
        zones.contains(&"az1") && zones.contains(&"az2"),
        "{zones:?}"
    );
    assert_eq!(paths["leaders_moved"], false);
    assert_eq!(paths["unknown_zone_records"], 0);
    // Each producer has partitions in its zone and in the other.
    let same = paths["same_zone"]["count"].as_u64().unwrap();
    let cross = paths["cross_zone"]["count"].as_u64().unwrap();
    assert!(same > 0 && cross > 0, "same {same}, cross {cross}");
    assert_eq!(same + cross, m["run"]["publish"]["count"].as_u64().unwrap());
    // A cross-zone produce waits for the proxy's PUT and the leader's: at
    // least two 60 ms PUTs.
    let cross_p50 = paths["cross_zone"]["p50_ms"].as_f64().unwrap();
    assert!(cross_p50 >= 120.0, "cross-zone p50 {cross_p50} ms");
    assert!(paths["cross_same_p99_ratio"].as_f64().unwrap() > 0.0);
    // Handoffs cross zones (their commits, not the data) and write handoff
    // objects; the bytes are a small share of what was produced.
    assert_eq!(m["rates"]["cross_zone_measured"], true);
    let handoff = m["rates"]["cross_zone_by_kind_per_sec"]["handoff"]
        .as_f64()
        .unwrap();
    assert!(handoff > 0.0, "{}", m["rates"]);
    assert!(m["rates"]["handoff_puts_per_sec"].as_f64().unwrap() > 0.0);
    let fraction = m["cross_zone_fraction"].as_f64().unwrap();
    assert!(fraction > 0.0 && fraction < 0.5, "{fraction}");
    assert_eq!(m["run"]["records_lost"], 0);
}

#[test]
fn a_one_point_sweep_against_ferry_dev() {
    let ferry = ferry_binary();
    let out = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (output, _) = run_bounded(
        Command::new(BIN)
            .arg("sweep")
            .arg("--ferry")
            .arg(&ferry)
            .args(["--batch-interval-ms", "50", "--max-bytes-mib", "1"])
            .args([
                "--rate",
                "200",
                "--record-bytes",
                "1000",
                "--partitions",
                "2",
            ])
            .args([
                "--warmup-secs",
                "1",
                "--duration-secs",
                "3",
                "--drain-secs",
                "10",
            ])
            // A constant 60 ms PUT: p50 = p99.
            .args(["--put-p50-ms", "60", "--put-p99-ms", "60"])
            // The model's default, given again: the node takes the
            // parameter on both URIs.
            .args(["--s3-params", "hedge=true"])
            .args([
                "--get-p50-ms",
                "5",
                "--get-p99-ms",
                "10",
                "--ms-per-mib",
                "0",
            ])
            .args(["--name", "it", "--out-dir"])
            .arg(out.path())
            .arg("--work-dir")
            .arg(work.path()),
        Duration::from_secs(120),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("sweep [1/1] batchInterval 50 ms, maxBytesInBatch 1 MiB: publish p50"),
        "no progress line:\n{stderr}"
    );
    assert!(stderr.contains(" hedges/s"), "{stderr}");

    let dirs: Vec<PathBuf> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let dir = &dirs[0];
    assert!(
        dir.file_name().unwrap().to_string_lossy().ends_with("Z-it"),
        "{}",
        dir.display()
    );
    assert_eq!(stdout.trim(), dir.join("report.md").display().to_string());
    for f in [
        "sweep.json",
        "sweep.csv",
        "report.md",
        "latency.svg",
        "frontier.svg",
        "throughput.svg",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("sweep.json")).unwrap()).unwrap();
    let point = &json["points"][0];
    assert_eq!(point["point"]["batch_interval_ms"], 50);
    assert_eq!(point["point"]["max_bytes_in_batch"], 1_048_576);
    let m = &point["measured"];
    assert!(m.is_object(), "point failed: {}", point["error"]);
    // Acknowledged only once the object's PUT is done: at least the 60 ms
    // PUT, where a bare directory answers in a few ms.
    let p50 = m["run"]["publish"]["p50_ms"].as_f64().unwrap();
    let p99 = m["run"]["publish"]["p99_ms"].as_f64().unwrap();
    assert!(
        p50 >= 60.0,
        "publish p50 {p50} ms: the latency model is off"
    );
    assert!(p99 < 2_000.0, "publish p99 {p99} ms");
    // One object per 50 ms while records flow: about 20 PUT/s (up to 4
    // uploads of 60 ms overlap, so the PUT latency does not slow them).
    let puts = m["rates"]["puts_per_sec"].as_f64().unwrap();
    assert!((12.0..=30.0).contains(&puts), "{puts} PUT/s");
    // Hedges are read (the first hedge waits 500 ms, so a 60 ms PUT is
    // rarely hedged), and the parameters are recorded.
    assert!(m["rates"]["hedges_per_sec"].as_f64().unwrap() >= 0.0);
    assert_eq!(
        json["config"]["s3_params"],
        serde_json::json!([["hedge", "true"]])
    );
    // The node exports its cross-zone bytes; one zone, untagged clients:
    // nothing crosses.
    assert_eq!(m["rates"]["cross_zone_measured"], true);
    assert_eq!(m["rates"]["cross_zone_bytes_per_sec"], 0.0);
    assert_eq!(m["run"]["records_lost"], 0);
    // 200 records/s of 1,000 B: 0.2 MB/s.
    let mbs = m["run"]["publish_throughput"]["mb_per_sec"]
        .as_f64()
        .unwrap();
    assert!((0.15..=0.25).contains(&mbs), "{mbs} MB/s");
    assert_eq!(
        point["on_frontier"], true,
        "the only point is on the frontier"
    );

    let csv = std::fs::read_to_string(dir.join("sweep.csv")).unwrap();
    assert_eq!(csv.lines().count(), 2, "{csv}");
    assert!(
        csv.lines()
            .nth(1)
            .unwrap()
            .starts_with("ferry,50,1048576,ok,"),
        "{csv}"
    );
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("| 50 ms | 1 MiB |"), "{md}");
    assert!(md.contains("URIs): `hedge=true`"), "{md}");

    // The node's directory (its bucket) is deleted with the point.
    let left: Vec<_> = std::fs::read_dir(work.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
