//! Retention: expired batches leave the log (all but the last, which tells
//! recovery where the log ends), and WAL objects no partition reads from any
//! more are deleted from the bucket, while a topic that keeps its data keeps
//! its objects.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::raw;
use ferry_node::broker::server;
use ferry_node::node::NodeSettings;
use ferry_node::storage::wal_log::WalLog;
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

fn wal_objects(bucket: &Path) -> usize {
    let dir = bucket.join("wal").join("5");
    std::fs::read_dir(&dir)
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "wal"))
            })
            .count()
        })
        .unwrap_or(0)
}

#[test]
fn expired_data_is_dropped_and_its_objects_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let uri = ferry_wal::BucketUri::parse(&format!("file://{}", bucket.display())).unwrap();
    let mut cfg = ferry_wal::WalConfig::new(5);
    cfg.batch_interval = Duration::from_millis(20);
    let opened = WalLog::open(uri.build_store().unwrap(), cfg).unwrap();
    let settings = NodeSettings {
        retention_ms: 1_000,
        retention_check_ms: 100,
        object_delete_age_ms: 0,
        ..NodeSettings::local(5)
    };
    let node = server::start(
        settings,
        opened.log.clone(),
        opened.topics,
        opened.recovered,
    )
    .unwrap();
    let mut c = TcpStream::connect(node.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(raw::create_topic(&mut c, "old", 1, &[]), 0);
    assert_eq!(
        raw::create_topic(&mut c, "kept", 1, &[("retention.ms", "-1")]),
        0
    );
    // Records stamped long ago, one WAL object each.
    for i in 0..5 {
        assert_eq!(
            raw::produce(
                &mut c,
                "old",
                0,
                1_600_000_000_000,
                format!("o{i}").as_bytes()
            ),
            (0, i)
        );
        std::thread::sleep(Duration::from_millis(40));
    }
    // A record of a topic that keeps its data forever, in a later object.
    assert_eq!(
        raw::produce(&mut c, "kept", 0, 1_600_000_000_000, b"k"),
        (0, 0)
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while raw::list_offset(&mut c, "old", 0, -2) != 4 || wal_objects(&bucket) > 2 {
        assert!(
            Instant::now() < deadline,
            "after 20 s: earliest offset of old is {}, {} WAL objects left",
            raw::list_offset(&mut c, "old", 0, -2),
            wal_objects(&bucket)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The kept topic's object is still there and its record readable; the
    // old topic's expired objects were deleted (each record had its own),
    // all but the one holding its last batch.
    assert!(wal_objects(&bucket) >= 1);
    assert_eq!(raw::list_offset(&mut c, "old", 0, -1), 5);
    let metrics = ferry_node::storage::durable::DurableLog::render_metrics(&*opened.log);
    let deleted: f64 = metrics
        .lines()
        .find(|l| l.starts_with("ferry_wal_objects_deleted_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap();
    assert!(deleted >= 2.0, "{metrics}");
    assert_eq!(raw::list_offset(&mut c, "kept", 0, -2), 0);
    assert_eq!(raw::list_offset(&mut c, "kept", 0, -1), 1);
    // Readable, both the kept record and the old topic's last one.
    assert_eq!(
        raw::fetch(&mut c, "kept", 0, 0),
        (0, vec![(0, b"k".to_vec())])
    );
    assert_eq!(
        raw::fetch(&mut c, "old", 0, 4),
        (0, vec![(4, b"o4".to_vec())])
    );
    node.stop();
    opened.log.shutdown(Duration::from_secs(5));

    // After a restart, from the bucket alone (no cache): the same.
    let opened = WalLog::open(uri.build_store().unwrap(), {
        let mut cfg = ferry_wal::WalConfig::new(5);
        cfg.batch_interval = Duration::from_millis(20);
        cfg
    })
    .unwrap();
    let node = server::start(
        NodeSettings::local(5),
        opened.log.clone(),
        opened.topics,
        opened.recovered,
    )
    .unwrap();
    let mut c = TcpStream::connect(node.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(
        raw::fetch(&mut c, "kept", 0, 0),
        (0, vec![(0, b"k".to_vec())])
    );
    assert_eq!(raw::list_offset(&mut c, "old", 0, -2), 4);
    assert_eq!(
        raw::fetch(&mut c, "old", 0, 4),
        (0, vec![(4, b"o4".to_vec())])
    );
    node.stop();
    opened.log.shutdown(Duration::from_secs(5));
}
