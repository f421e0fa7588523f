//! When the bucket stops taking writes, producers get a retriable error
//! within their timeout, memory for unacknowledged data stays bounded, and
//! once the bucket is back offsets carry on densely: the failed batches'
//! offsets are given out again, never left as holes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::raw;
use ferry_node::broker::server;
use ferry_node::node::NodeSettings;
use ferry_node::storage::wal_log::WalLog;
use ferry_protocol::error_code::ErrorCode;
use ferry_wal::FaultyStore;
use object_store::ObjectStore;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn a_bucket_outage_gives_retriable_errors_and_no_holes() {
    let dir = tempfile::tempdir().unwrap();
    let uri =
        ferry_wal::BucketUri::parse(&format!("file://{}", dir.path().join("bucket").display()))
            .unwrap();
    let faulty = Arc::new(FaultyStore::new(uri.build_store().unwrap()));
    let store: Arc<dyn ObjectStore> = faulty.clone();
    let mut cfg = ferry_wal::WalConfig::new(9);
    cfg.batch_interval = Duration::from_millis(20);
    cfg.upload_deadline = Duration::from_secs(2);
    cfg.retry_backoff_max = Duration::from_millis(200);
    cfg.inflight_bytes_max = 256 << 10;
    let opened = WalLog::open(store, cfg).unwrap();
    let node = server::start(
        NodeSettings::local(9),
        opened.log.clone(),
        opened.topics,
        opened.recovered,
    )
    .unwrap();
    let mut c = TcpStream::connect(node.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    assert_eq!(raw::create_topic(&mut c, "t", 1, &[]), 0);
    assert_eq!(raw::produce(&mut c, "t", 0, 1, b"a"), (0, 0));
    assert_eq!(raw::produce(&mut c, "t", 0, 1, b"b"), (0, 1));

    // The bucket refuses every write: the producer hears back, with a
    // retriable error, before its 10 s timeout.
    faulty.set_puts_failing(true);
    let started = Instant::now();
    let (code, _) = raw::produce(&mut c, "t", 0, 1, b"lost");
    let took = started.elapsed();
    assert!(
        ErrorCode(code).is_retriable(),
        "error {} should be retriable",
        ErrorCode(code)
    );
    assert!(took < Duration::from_secs(10), "answered after {took:?}");
    // Nothing unacknowledged is visible.
    assert_eq!(raw::list_offset(&mut c, "t", 0, -1), 2);

    // The bucket is back: the next record takes offset 2, not 3.
    faulty.set_puts_failing(false);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, offset) = raw::produce(&mut c, "t", 0, 1, b"c");
        if code == 0 {
            assert_eq!(
                offset, 2,
                "the failed batch's offset must be reused, not skipped"
            );
            break;
        }
        assert!(ErrorCode(code).is_retriable(), "{}", ErrorCode(code));
        assert!(
            Instant::now() < deadline,
            "the bucket came back but produce still fails: {}",
            ErrorCode(code)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(raw::list_offset(&mut c, "t", 0, -1), 3);
    node.stop();
    opened.log.shutdown(Duration::from_secs(5));
}
