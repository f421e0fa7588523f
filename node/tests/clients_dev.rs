//! Real clients against `ferry dev` (a local-directory bucket), as a process
//! that is killed with SIGKILL and restarted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::{free_port, python, wait_bounded, DevNode};

#[test]
fn a_group_rebalances_and_its_offsets_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = DevNode::start(dir.path(), free_port(), &[]);
    python("group_rebalance.py", &[&node.bootstrap(), "run"], 120);
    node.kill9_and_restart(&[]);
    python("group_rebalance.py", &[&node.bootstrap(), "check"], 60);
}

#[test]
fn records_survive_kill_9_and_are_served_from_the_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = DevNode::start(dir.path(), free_port(), &[]);
    python(
        "produce_consume.py",
        &[&node.bootstrap(), "before-kill", "500", "zstd"],
        120,
    );
    node.kill9_and_restart(&[]);
    python(
        "consume_check.py",
        &[&node.bootstrap(), "before-kill", "500"],
        60,
    );
}

/// Runs `tests/crash_checker.py` on one store with one kind of producer:
/// three `kill -9` in 12 s while an acks=all producer writes, then every
/// acknowledged record must be at its offset (see the script).
fn crash_check(store: &str, producer: &str) {
    crash_check_with(store, producer, &[]);
}

fn crash_check_with(store: &str, producer: &str, extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/crash_checker.py");
    let mut child = std::process::Command::new("python3")
        .args([script, "--ferry", env!("CARGO_BIN_EXE_ferry"), "--dir"])
        .arg(dir.path())
        .args(["--kills", "3", "--seconds", "12"])
        .args(["--store", store, "--producer", producer])
        .args(extra)
        .spawn()
        .expect("python3");
    let status = wait_bounded(
        &mut child,
        &format!("crash checker ({store}, {producer})"),
        std::time::Duration::from_secs(400),
    );
    assert!(
        status.success(),
        "crash checker ({store}, {producer}) failed; node log in {}",
        dir.keep().display()
    );
}

#[test]
fn crash_checker_loses_nothing_acknowledged() {
    crash_check("dir", "idempotent");
}

/// The same on a bucket that misbehaves as S3 does (the fault model: a long
/// tail, 1% 503 SlowDown, 0.5% 500s, 0.5% stalled requests): nothing
/// acknowledged is lost, no produce fails, memory stays bounded.
#[test]
fn crash_checker_on_a_slow_throttling_stalling_bucket() {
    crash_check_with("dir", "idempotent", &["--faults"]);
}

#[test]
fn crash_checker_plain_producer_on_the_local_directory() {
    crash_check("dir", "plain");
}

#[test]
fn crash_checker_idempotent_producer_on_moto() {
    crash_check("moto", "idempotent");
}

#[test]
fn crash_checker_plain_producer_on_moto() {
    crash_check("moto", "plain");
}

#[test]
fn crash_checker_idempotent_producer_on_s3s_fs() {
    crash_check("s3s", "idempotent");
}

#[test]
fn crash_checker_plain_producer_on_s3s_fs() {
    crash_check("s3s", "plain");
}

#[test]
fn kafka_python_produces_and_consumes_with_every_codec() {
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(dir.path(), free_port(), &[]);
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        python(
            "kp_produce_consume.py",
            &[&node.bootstrap(), &format!("kp-{codec}"), "200", codec],
            120,
        );
    }
}

fn s3_node(server: &str) {
    s3_node_in(tempfile::tempdir().unwrap(), server, &[]);
}

fn s3_node_in(dir: tempfile::TempDir, server: &str, extra: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/s3_node.py");
    let status = std::process::Command::new("python3")
        .args([script, "--ferry", env!("CARGO_BIN_EXE_ferry"), "--dir"])
        .arg(dir.path())
        .args(["--server", server])
        .args(extra)
        .status()
        .expect("python3");
    assert!(
        status.success(),
        "S3 node test on {server} failed; node log in {}",
        dir.keep().display()
    );
}

#[test]
fn a_node_on_a_real_s3_server_survives_kill_9() {
    s3_node("moto");
}

#[test]
fn a_node_on_s3s_fs_survives_kill_9() {
    s3_node("s3s");
}

/// An `https` S3 endpoint whose certificate comes from a private CA: the
/// node does not come up without `caFile` (it cannot verify the bucket),
/// and with it produces, survives kill -9 and reads everything back.
#[test]
fn a_node_on_an_https_s3_endpoint_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ferry_node::security::pki::DevCa::new("private S3 CA").unwrap();
    let leaf = ca.leaf("CN=s3.internal", &["127.0.0.1"]).unwrap();
    let path = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    };
    let (cert, key, ca_file) = (
        path("s3.crt", &leaf.cert_pem),
        path("s3.key", &leaf.key_pem),
        path("s3-ca.pem", &ca.cert_pem),
    );
    s3_node_in(
        dir,
        "moto",
        &["--tls-cert", &cert, "--tls-key", &key, "--ca", &ca_file],
    );
}

/// Reads `/metrics` from a running node.
fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    s
}

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

#[test]
fn metrics_count_requests_wal_objects_and_latency() {
    let dir = tempfile::tempdir().unwrap();
    let mport = free_port();
    let listener = format!("ferry.metrics.listener=127.0.0.1:{mport}");
    let node = DevNode::start(dir.path(), free_port(), &["--override", &listener]);
    python(
        "produce_consume.py",
        &[&node.bootstrap(), "metered", "300", "none"],
        120,
    );
    // Shards publish their latency about once a second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let text = loop {
        let text = scrape(mport);
        let published = value(&text, "ferry_produce_latency_seconds_count") >= 1.0;
        if published || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(value(&text, "ferry_requests_total{api=\"Produce\"}") >= 1.0);
    assert!(value(&text, "ferry_requests_total{api=\"Fetch\"}") >= 1.0);
    assert!(value(&text, "ferry_wal_objects_total") >= 1.0);
    assert!(value(&text, "ferry_s3_puts_total") >= 1.0);
    assert!(value(&text, "ferry_bytes_in_total") > 300.0 * 100.0);
    assert!(value(&text, "ferry_produce_latency_seconds_count") >= 1.0);
    assert!(value(&text, "ferry_cache_hit_ratio") > 0.0);
    assert!(text.contains("ferry_shard_queue_depth{shard=\"0\"}"));
    // Passes that could delete nothing (a shard may not have reported
    // before the first one).
    assert!(value(&text, "ferry_object_deletion_blocked_passes") <= 1.0);
}

#[test]
fn a_recreated_topic_starts_empty_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = DevNode::start(dir.path(), free_port(), &[]);
    python("recreate_topic.py", &[&node.bootstrap(), "run"], 120);
    node.kill9_and_restart(&[]);
    python("recreate_topic.py", &[&node.bootstrap(), "check"], 60);
}
