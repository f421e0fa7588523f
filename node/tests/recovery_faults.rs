//! Start-up recovery against a bucket that fails or holds a corrupt
//! object: a node never serves a partition rebuilt without an object it
//! could not read. It waits out read errors (500, 503, timeouts), and a
//! corrupt object stops the partitions whose history it may hold, with
//! KAFKA_STORAGE_ERROR, until the operator accepts its loss.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::raw;
use ferry_node::broker::server::{self, RunningNode};
use ferry_node::node::NodeSettings;
use ferry_node::storage::wal_log::{Opened, RecoveryOptions, WalLog};
use ferry_protocol::error_code::ErrorCode;
use ferry_wal::{FaultWindow, FaultyStore, ReadFault};
use object_store::ObjectStore;
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const NODE: i32 = 4;

fn faulty(bucket: &Path) -> Arc<FaultyStore> {
    let uri = ferry_wal::BucketUri::parse(&format!("file://{}", bucket.display())).unwrap();
    Arc::new(FaultyStore::new(uri.build_store().unwrap()))
}

fn open(store: &Arc<FaultyStore>, options: RecoveryOptions) -> Opened {
    let mut cfg = ferry_wal::WalConfig::new(NODE as u32);
    cfg.batch_interval = Duration::from_millis(10);
    let store: Arc<dyn ObjectStore> = store.clone();
    WalLog::open_with_options(store, cfg, None, options).unwrap()
}

fn start(opened: Opened) -> (RunningNode, Arc<WalLog>) {
    start_with(opened, NodeSettings::local(NODE))
}

/// [`start`], deleting every object nothing refers to at once (a retention
/// pass every 100 ms, no minimum age).
fn start_deleting(opened: Opened) -> (RunningNode, Arc<WalLog>) {
    let settings = NodeSettings {
        retention_check_ms: 100,
        object_delete_age_ms: 0,
        ..NodeSettings::local(NODE)
    };
    start_with(opened, settings)
}

fn start_with(opened: Opened, settings: NodeSettings) -> (RunningNode, Arc<WalLog>) {
    let settings = NodeSettings {
        compaction_interval_ms: 0,
        blocked: opened.blocked,
        ..settings
    };
    let log = opened.log.clone();
    let node = server::start(settings, opened.log, opened.topics, opened.recovered).unwrap();
    (node, log)
}

fn stop((node, log): (RunningNode, Arc<WalLog>)) {
    node.stop();
    log.shutdown(Duration::from_secs(5));
}

fn connect(node: &RunningNode) -> TcpStream {
    let c = TcpStream::connect(node.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c
}

/// Every record of partition `p` as (offset, key).
fn read_all(c: &mut TcpStream, p: i32) -> Vec<(i64, Vec<u8>)> {
    let (code, records) = raw::fetch(c, "t", p, 0);
    assert_eq!(code, 0, "fetch of t-{p}: {}", ErrorCode(code));
    records
}

#[test]
fn a_node_started_while_reads_fail_waits_then_recovers_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let store = faulty(&bucket);
    let running = start(open(&store, RecoveryOptions::default()));
    let mut c = connect(&running.0);
    assert_eq!(raw::create_topic(&mut c, "t", 3, &[]), 0);
    for i in 0..5 {
        for p in 0..3 {
            let key = format!("k{p}-{i}");
            assert_eq!(raw::produce(&mut c, "t", p, 1, key.as_bytes()), (0, i));
        }
    }
    drop(c);
    stop(running);

    // Every GET, HEAD and LIST fails for 2 s: as 503 SlowDown, then as
    // requests that hang and time out; then only the WAL objects' reads
    // fail (500), while their listing and everything else works.
    for (fault, spare_lists) in [
        (ReadFault::Status(503), false),
        (ReadFault::Timeout(Duration::from_millis(300)), false),
        (ReadFault::Status(500), true),
    ] {
        let store = faulty(&bucket);
        store.set_spare_lists(spare_lists);
        if spare_lists {
            store.set_fault_prefix(Some("wal/"));
        }
        let outage = Duration::from_secs(2);
        store.fail_reads(Some((fault, FaultWindow::Until(Instant::now() + outage))));
        let began = Instant::now();
        let opened = open(&store, RecoveryOptions::default());
        let took = began.elapsed();
        // Nothing is served before the bucket could be read: recovery
        // (and so the listener) waited the outage out.
        assert!(
            took >= outage,
            "{fault:?}: recovered after {took:?}, inside the outage"
        );
        assert!(store.read_failures() > 0, "{fault:?}: no read failed");
        assert!(opened.blocked.is_empty(), "{:?}", opened.blocked);
        let running = start(opened);
        let mut c = connect(&running.0);
        for p in 0..3 {
            let want: Vec<(i64, Vec<u8>)> = (0..5)
                .map(|i| (i, format!("k{p}-{i}").into_bytes()))
                .collect();
            assert_eq!(read_all(&mut c, p), want, "{fault:?}: t-{p}");
            assert_eq!(raw::list_offset(&mut c, "t", p, -1), 5);
        }
        drop(c);
        stop(running);
    }
}

/// The key of the WAL object holding partition `p`'s batch at `offset`.
fn object_holding(store: &Arc<FaultyStore>, p: i32, offset: i64) -> String {
    let io = ferry_wal::IoRuntime::new(1).unwrap();
    let s: Arc<dyn ObjectStore> = store.clone();
    let rec = io
        .block_on(ferry_wal::recovery::scan(&*s, "wal", NODE as u32))
        .unwrap();
    rec.entries
        .iter()
        .find(|e| e.entry.partition == p && e.entry.base_offset == offset)
        .map(|e| e.key.to_string())
        .expect("the batch is in some object")
}

#[test]
fn a_corrupt_wal_object_stops_its_partitions_and_no_others() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let store = faulty(&bucket);
    let running = start(open(&store, RecoveryOptions::default()));
    let mut c = connect(&running.0);
    assert_eq!(raw::create_topic(&mut c, "t", 3, &[]), 0);
    // Each acknowledged produce is its own object: t-0@0, t-1@0, t-2@0,
    // then t-0@1 (the one to be corrupted), then t-1@1 and t-2@1.
    for p in 0..3 {
        assert_eq!(raw::produce(&mut c, "t", p, 1, b"first"), (0, 0));
    }
    assert_eq!(
        raw::produce(&mut c, "t", 0, 1, b"acked-then-corrupted"),
        (0, 1)
    );
    for p in 1..3 {
        assert_eq!(raw::produce(&mut c, "t", p, 1, b"second"), (0, 1));
    }
    drop(c);
    stop(running);
    let corrupt = object_holding(&store, 0, 1);
    let first = object_holding(&store, 0, 0);
    assert_ne!(corrupt, object_holding(&store, 1, 1));
    let path = bucket.join(&corrupt);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 30; // in the index or the footer
    bytes[at] ^= 0x10;
    std::fs::write(&path, bytes).unwrap();

    let opened = open(&faulty(&bucket), RecoveryOptions::default());
    let blocked: Vec<_> = opened.blocked.keys().cloned().collect();
    assert_eq!(blocked, vec![(Arc::from("t"), 0)]);
    assert_eq!(opened.blocked[&(Arc::from("t"), 0)], vec![corrupt.clone()]);
    let running = start_deleting(opened);
    assert_eq!(running.0.ctx.blocked_count(), 1);
    let mut c = connect(&running.0);
    // t-0 is stopped: its offset 1 is not given out again, and nothing of
    // it is served.
    let storage = ErrorCode::KAFKA_STORAGE_ERROR.code();
    assert_eq!(raw::produce(&mut c, "t", 0, 1, b"reuse?").0, storage);
    assert_eq!(raw::fetch(&mut c, "t", 0, 0).0, storage);
    // The others are served, whole, and go on after their last offset.
    for p in 1..3 {
        assert_eq!(
            read_all(&mut c, p),
            vec![(0, b"first".to_vec()), (1, b"second".to_vec())]
        );
        assert_eq!(raw::produce(&mut c, "t", p, 1, b"third"), (0, 2));
    }
    // Deletion by reference runs meanwhile: the stopped partition's
    // objects, the corrupt one and the one before it, are kept.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(path.exists(), "the corrupt object was deleted");
    assert!(
        bucket.join(&first).exists(),
        "t-0's first object was deleted"
    );
    drop(c);
    stop(running);

    // The operator accepts the corrupt object's loss by name: t-0 is
    // served without it.
    let options = RecoveryOptions {
        accept_lost: vec![corrupt],
        ..RecoveryOptions::default()
    };
    let opened = open(&faulty(&bucket), options);
    assert!(opened.blocked.is_empty(), "{:?}", opened.blocked);
    let running = start(opened);
    let mut c = connect(&running.0);
    assert_eq!(read_all(&mut c, 0), vec![(0, b"first".to_vec())]);
    assert_eq!(read_all(&mut c, 1).len(), 3);
    drop(c);
    stop(running);
}
