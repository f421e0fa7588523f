//! Three zones as network namespaces (tests/zones/): etcd and moto's S3
//! server in a services namespace, two `ferry node` processes per zone, real
//! clients inside the zones. This runs the steps of tests/zones/check.py
//! that hold today:
//!
//! - topology: the namespaces, bridges and addresses, the root namespace's
//!   routes untouched;
//! - cluster: every node lists every node with its zone;
//! - metadata: zone-tagged clients see only their zone's nodes as leaders
//!   (Metadata, FindCoordinator), leaders are spread over the zones, and a
//!   metadata-only load sends at most 1% of its bytes across zones (counted
//!   on the zone bridge's interfaces, not by Ferry);
//! - local: each zone produces (acks=all, idempotent) to and consumes from
//!   the partitions its own nodes lead; every ack is read back at its offset
//!   and cross-zone bytes are at most 1% of the bytes produced;
//! - meter: the control for the counters: an untagged producer writing
//!   straight to leaders in other zones shows all its bytes on the bridge;
//! - cidr: `automq.zone.cidr.blocks` set at run time at the broker defaults
//!   moves an untagged client between zones, on its open connection.
//!
//! Every step runs: the metadata and local-path checks, the cross-zone
//! produce and consume with the bytes counted on the zone bridge, consumer
//! groups, kill -9 of a proxy and of a leader under load, and a fenced
//! leader's late writes. Choose steps with
//! `FERRY_ZONES_STEPS=topology,cluster,kill cargo test -p ferry-node --test
//! zones_netns` (the time limit then grows to 10 min).
//!
//! A second test runs the produce, cross-zone, kill and fence steps with
//! s3s-fs in place of moto, every node's bucket behind the S3 fault model
//! (a long tail, 503 SlowDown, 500s and stalled requests; hedging on).
//!
//! A third starts the cluster with `--secure` (clients on SASL_SSL with
//! SCRAM-SHA-512, nodes on an mTLS INTERNAL listener, ACLs on) and runs the
//! secure step: users and ACLs made through INTERNAL with an admin
//! certificate; alice produces and consumes across zones through her zone's
//! proxies; bob without WRITE is refused by the proxy; Ferry's API key 32000
//! on the client listener closes the connection; bad logins are refused.
//!
//! Needs root (network namespaces); without it the test fails, it does not
//! skip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The steps, and how long they may take in all.
const STEPS: &str =
    "topology,cluster,metadata,local,meter,cidr,produce_consume,cross_zone,groups,kill,fence";
const LIMIT: Duration = Duration::from_secs(300);
/// The limit when `FERRY_ZONES_STEPS` chooses other steps.
const LIMIT_CHOSEN: Duration = Duration::from_secs(600);

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("run `id -u`");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[test]
fn zones_in_network_namespaces_metadata_local_path_and_cidr_at_run_time() {
    let chosen = std::env::var("FERRY_ZONES_STEPS").ok();
    let steps = chosen.clone().unwrap_or_else(|| STEPS.to_owned());
    let limit = if chosen.is_some() {
        LIMIT_CHOSEN
    } else {
        LIMIT
    };
    let (dir, result) = run_check(&steps, "moto", limit);
    if chosen.is_some() {
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    // The numbers behind the verdicts.
    let local = &result["local"]["numbers"];
    let produced = local["produced_bytes"].as_f64().unwrap();
    assert!(produced >= 3.0 * 1000.0 * 1024.0, "{local}");
    assert!(local["cross_zone_pct"].as_f64().unwrap() <= 1.0, "{local}");
    let meta = &result["metadata"]["numbers"];
    let meta_client = meta["client_metadata_bytes"].as_f64().unwrap();
    let meta_cross = meta["cross_zone_bytes"].as_f64().unwrap();
    assert!(
        meta_client > 0.0 && meta_cross <= meta_client / 100.0,
        "{meta}"
    );
    // The control: bytes sent across on purpose are all seen on the bridge.
    let meter = &result["meter"]["numbers"];
    assert!(
        meter["zone1_sent_pct"].as_f64().unwrap() >= 100.0,
        "{meter}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The S3 fault model of `tests/crash_checker.py --faults`: PUT and GET
/// p99.9 of 1.5 s, 1% 503 SlowDown, 0.5% 500s, 0.5% stalled requests.
const FAULTS: &str = "putLatencyP50Ms=20&putLatencyP99Ms=150&putLatencyP999Ms=1500\
    &getLatencyP50Ms=10&getLatencyP99Ms=80&getLatencyP999Ms=1500\
    &slowDownRate=0.01&serverErrorRate=0.005&stallRate=0.005";

/// The same cluster on s3s-fs instead of moto (they answer some requests
/// differently), and every node's bucket misbehaving as S3 does (the fault
/// model; proxies, leaders and read replicas alike): the steps that read
/// and write the bucket the most: produce and consume in every zone, the
/// cross-zone handoff, kill -9 of a proxy and of a leader under load, and a
/// fenced leader's late writes, with every acknowledged record read back.
#[test]
fn zones_in_network_namespaces_on_s3s_fs_with_s3_faults_survive_kills() {
    let (dir, _) = run_check_with(
        "topology,cluster,produce_consume,cross_zone,kill,fence",
        "s3s",
        LIMIT,
        &["--s3-params", FAULTS],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// TLS, SASL and ACLs across the zones (check.py --secure): the numbers
/// behind the secure step's verdict.
#[test]
fn zones_in_network_namespaces_secure_sasl_ssl_clients_mtls_nodes_and_acls() {
    let (dir, result) = run_check_with("topology,cluster,secure", "moto", LIMIT, &["--secure"]);
    let n = &result["secure"]["numbers"];
    // (a) alice: every record of every zone acknowledged and read back,
    // handed off across zones over mTLS, few bytes across zones.
    let a = &n["a"];
    assert_eq!(a["acked"], a["sent"], "{a}");
    assert!(
        a["sent"].as_u64().unwrap() >= 3 * 2000,
        "three zones of 2000 records: {a}"
    );
    for z in 1..=3 {
        let zone = &a[format!("zone{z}").as_str()];
        assert_eq!(zone["lost_acked"], 0, "{a}");
        assert_eq!(zone["duplicate_keys"], 0, "{a}");
        assert_eq!(zone["read"], a["sent"], "{a}");
    }
    assert!(
        a["ferry_rpc_cross_zone"]["handoff-out"].as_u64().unwrap() > 0,
        "{a}"
    );
    let pct = a["cross_zone_pct"].as_f64().unwrap();
    assert!((0.0..=5.0).contains(&pct), "{a}");
    // (b) bob: every record refused by a proxy, no offset moved.
    let b = &n["b"];
    assert_eq!(b["refused"], b["sent"], "{b}");
    assert_eq!(b["acked"], 0, "{b}");
    assert_eq!(b["end_offsets_before"], b["end_offsets_after"], "{b}");
    // (c) API key 32000 on the client listener: closed, nothing committed;
    // on INTERNAL from a certificate that is no member's: refused (31).
    let c = &n["c"];
    for v in c["client_listener"].as_object().unwrap().values() {
        assert_eq!(v["sasl_alice"]["sasl"]["ok"].as_bool(), Some(true), "{c}");
        assert_eq!(v["sasl_alice"]["reply"], "closed", "{c}");
        assert_eq!(v["no_sasl"]["reply"], "closed", "{c}");
    }
    for v in c["internal_as_admin"].as_object().unwrap().values() {
        assert_eq!(v["rpc_error_codes"], serde_json::json!([31]), "{c}");
    }
    assert_eq!(c["end_offsets_before"], c["end_offsets_after"], "{c}");
    // (d) wrong password and unknown user: SASL_AUTHENTICATION_FAILED (58);
    // the nodes still serve alice afterwards.
    let d = &n["d"];
    for key in ["wrong_password", "unknown_user"] {
        for v in d[key].as_object().unwrap().values() {
            assert_eq!(v["sasl"]["error_code"], 58, "{key}: {d}");
        }
    }
    assert_eq!(d["nodes_serving_alice"], 6, "{d}");
    assert_eq!(d["produce_after"]["acked"], 30, "{d}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs tests/zones/check.py's `steps` on `s3` (moto or s3s), within
/// `limit`; asserts every step passed and answers the work directory and
/// the JSON result.
fn run_check(steps: &str, s3: &str, limit: Duration) -> (PathBuf, serde_json::Value) {
    run_check_with(steps, s3, limit, &[])
}

/// [`run_check`] with more arguments for check.py (`--secure`).
fn run_check_with(
    steps: &str,
    s3: &str,
    limit: Duration,
    extra: &[&str],
) -> (PathBuf, serde_json::Value) {
    // One cluster at a time: two would share the machine's two cores.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    assert!(
        is_root(),
        "the zone tests need root: they create network namespaces, veth pairs and bridges \
         (ip netns, iproute2). Run the tests as root (CI does), or run \
         `sudo python3 tests/zones/check.py --ferry target/debug/ferry` by hand"
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/zones/check.py");
    let flavour = if extra.contains(&"--secure") {
        format!("{s3}-secure")
    } else {
        s3.to_owned()
    };
    let dir: PathBuf =
        std::env::temp_dir().join(format!("ferry-zones-test-{}-{flavour}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let result_path = dir.join("result.json");
    let out_path = dir.join("check.out");
    let out = std::fs::File::create(&out_path).unwrap();
    let mut child = Command::new("python3")
        .arg(script)
        .args(["--ferry", env!("CARGO_BIN_EXE_ferry"), "--only", steps])
        .args(["--s3", s3])
        .args([
            "--nodes-per-zone",
            "2",
            "--records",
            "2000",
            "--kill-seconds",
            "20",
        ])
        .args(extra)
        .arg("--workdir")
        .arg(dir.join("work"))
        .arg("--json-out")
        .arg(&result_path)
        // Its own process group, so that a timeout reaches python3 even
        // behind a wrapper (pyenv's shim).
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("python3 must be installed (scripts/test.sh installs the clients)");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > limit {
            // SIGTERM first: the harness tears its namespaces down on it.
            let group = format!("-{}", child.id());
            let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
            let end = Instant::now() + Duration::from_secs(15);
            while child.try_wait().unwrap().is_none() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = child.wait();
            panic!(
                "tests/zones/check.py took more than {limit:?}; output in {}:\n{}",
                out_path.display(),
                tail(&out_path, 60)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    let step_lines: Vec<&str> = output.lines().filter(|l| l.starts_with("STEP ")).collect();
    let summary = step_lines.join("\n");
    let result: serde_json::Value = std::fs::read_to_string(&result_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| {
            panic!(
                "check.py ({status}) wrote no result; output in {}:\n{}",
                out_path.display(),
                tail(&out_path, 80)
            )
        });
    for step in steps.split(',') {
        let r = &result[step];
        assert!(
            r["ok"].as_bool() == Some(true),
            "step {step} failed ({status}):\n{summary}\nfull output and node logs in {}:\n{}",
            dir.display(),
            tail(&out_path, 80)
        );
    }
    assert!(status.success(), "check.py exited {status}:\n{summary}");
    println!("{summary}");
    (dir, result)
}
