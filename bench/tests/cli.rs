//! The `ferry-bench` binary as a user runs it: the cost model's output, bad
//! flags, and a broker that is not there (the run must end, in bounded time,
//! with an error that names the broker). Short real runs against a broker
//! are in `blast.rs`, `sweep.rs` and `node/tests/bench_against_dev.rs`.

mod common;

use common::BIN;
use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::Duration;

/// Runs the binary with `args`, killing it if it outlives `limit`.
fn run_bounded(args: &[&str], limit: Duration) -> (Output, Duration) {
    common::run_bounded(Command::new(BIN).args(args), limit)
}

#[test]
fn cost_prints_the_hand_computed_figures() {
    // 1 MB/s produced: Kafka RF=3 $140.16/month, follower fetching $105.12;
    // Ferry at 4 PUT/s: $52.56; break-even at 250 ms: 1 MB/s (see cost.rs).
    let (out, _) = run_bounded(
        &[
            "cost",
            "--produce-mb-per-sec",
            "1",
            "--ferry-puts-per-sec",
            "4",
            "--batch-interval-ms",
            "250",
        ],
        Duration::from_secs(30),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("140.16"), "{stdout}");
    assert!(stdout.contains("105.12"), "{stdout}");
    assert!(stdout.contains("52.56"), "{stdout}");
    assert!(
        stdout.contains("batchInterval 250 ms: 1.000 MB/s"),
        "{stdout}"
    );
}

#[test]
fn a_bad_flag_is_named() {
    let (out, _) = run_bounded(&["run", "--zone", "no-address"], Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--zone"), "{stderr}");
}

#[test]
fn a_missing_broker_fails_within_the_connect_timeout() {
    // A port that was just free: nothing listens there.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let bootstrap = format!("127.0.0.1:{port}");
    let (out, elapsed) = run_bounded(
        &[
            "run",
            "--bootstrap",
            &bootstrap,
            "--connect-timeout-secs",
            "2",
            "--duration-secs",
            "1",
        ],
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&bootstrap), "{stderr}");
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
}
