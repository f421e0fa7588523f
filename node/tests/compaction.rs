//! Compaction: durable batches move from WAL objects into per-partition
//! objects, the WAL objects are deleted, the same records come back at the
//! same offsets (cold, from the compacted objects, and after a restart),
//! small objects are merged, and a deleted topic's objects go.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::raw;
use ferry_node::broker::server::{self, RunningNode};
use ferry_node::node::NodeSettings;
use ferry_node::storage::wal_log::WalLog;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p, ext));
        } else if p.extension().is_some_and(|x| x == ext) {
            out.push(p);
        }
    }
    out
}

fn contains(file: &Path, needle: &[u8]) -> bool {
    std::fs::read(file)
        .map(|b| b.windows(needle.len()).any(|w| w == needle))
        .unwrap_or(false)
}

fn start(bucket: &Path, compaction_ms: u64, bytes_min: usize) -> (RunningNode, Arc<WalLog>) {
    let uri = ferry_wal::BucketUri::parse(&format!("file://{}", bucket.display())).unwrap();
    let mut cfg = ferry_wal::WalConfig::new(3);
    cfg.batch_interval = Duration::from_millis(10);
    let opened = WalLog::open(uri.build_store().unwrap(), cfg).unwrap();
    let settings = NodeSettings {
        retention_check_ms: 100,
        object_delete_age_ms: 0,
        compaction_interval_ms: compaction_ms,
        compaction_bytes_min: bytes_min,
        // A tiny cache: most reads are cold, from the bucket.
        cache_bytes_max: 1 << 20,
        ..NodeSettings::local(3)
    };
    let node = server::start(
        settings,
        opened.log.clone(),
        opened.topics,
        opened.recovered,
    )
    .unwrap();
    (node, opened.log)
}

fn connect(node: &RunningNode) -> TcpStream {
    let c = TcpStream::connect(node.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c
}

fn read_all(
    c: &mut TcpStream,
    topic: &str,
    partition: i32,
    from: i64,
    end: i64,
) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut next = from;
    let deadline = Instant::now() + Duration::from_secs(20);
    while next < end {
        assert!(Instant::now() < deadline, "read only up to {next} of {end}");
        let (err, recs) = raw::fetch(c, topic, partition, next);
        assert_eq!(err, 0);
        for (o, k) in recs {
            if o >= next {
                next = o + 1;
                out.push((o, k));
            }
        }
    }
    out
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "after 30 s: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn durable_batches_move_out_of_the_wal_and_read_back_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let (node, log) = start(&bucket, 300, 0);
    let mut c = connect(&node);
    assert_eq!(raw::create_topic(&mut c, "a", 2, &[]), 0);
    assert_eq!(raw::create_topic(&mut c, "gone", 1, &[]), 0);
    // 40 records per partition, one WAL object each (10 ms interval).
    for i in 0..40 {
        for p in 0..2 {
            let key = format!("a{p}-{i}");
            assert_eq!(
                raw::produce(&mut c, "a", p, 1_000 + i, key.as_bytes()),
                (0, i)
            );
        }
        assert_eq!(raw::produce(&mut c, "gone", 0, 1, b"g"), (0, i));
    }
    let wal_dir = bucket.join("wal").join("3");
    let data_dir = bucket.join("data").join("3");
    // Compaction moves every durable batch; the WAL objects then go (the
    // last ones may stay until a pass after the last write).
    wait_until("WAL objects compacted and deleted", || {
        !files(&data_dir, "obj").is_empty() && files(&wal_dir, "wal").len() <= 2
    });
    for p in 0..2 {
        let got = read_all(&mut c, "a", p, 0, 40);
        let want: Vec<(i64, Vec<u8>)> = (0..40)
            .map(|i| (i, format!("a{p}-{i}").into_bytes()))
            .collect();
        assert_eq!(got, want, "partition {p} after compaction");
    }
    // Deleting a topic deletes its compacted objects.
    let gone_objects = || {
        files(&data_dir, "obj")
            .into_iter()
            .filter(|f| contains(f, b"gone"))
            .count()
    };
    assert!(gone_objects() > 0);
    let body = ferry_protocol::messages::RequestBody::DeleteTopics(
        ferry_protocol::messages::delete_topics_request::DeleteTopicsRequest {
            topic_names: vec!["gone".into()],
            timeout_ms: 5000,
            ..Default::default()
        },
    );
    raw::call(&mut c, 4, body);
    wait_until("the deleted topic's compacted objects are deleted", || {
        gone_objects() == 0
    });
    // Idle: the object count stays flat over several passes.
    let all = || files(&bucket, "wal").len() + files(&bucket, "obj").len();
    // All but the newest, which keeps the node's numbering going.
    wait_until("the last WAL objects go", || {
        files(&wal_dir, "wal").len() <= 1
    });
    let idle = all();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(all(), idle, "an idle node's object count changed");
    let metrics = ferry_node::storage::durable::DurableLog::render_metrics(&*log);
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap()
    };
    assert!(value("ferry_compacted_objects_total") >= 3.0, "{metrics}");
    assert!(
        value("ferry_wal_objects_deleted_total") >= 50.0,
        "{metrics}"
    );
    drop(c);
    node.stop();
    log.shutdown(Duration::from_secs(5));

    // After a restart, without compaction, every record comes back from the
    // compacted objects, at its offset; new records continue the log.
    let (node, log) = start(&bucket, 0, 0);
    let mut c = connect(&node);
    let gets = || {
        ferry_node::storage::durable::DurableLog::render_metrics(&*log)
            .lines()
            .find(|l| l.starts_with("ferry_s3_gets_total"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap()
    };
    let gets_before = gets();
    for p in 0..2 {
        assert_eq!(raw::list_offset(&mut c, "a", p, -2), 0);
        assert_eq!(raw::list_offset(&mut c, "a", p, -1), 40);
        let got = read_all(&mut c, "a", p, 0, 40);
        assert_eq!(got.len(), 40);
        assert!(got
            .iter()
            .enumerate()
            .all(|(i, (o, k))| *o == i as i64 && *k == format!("a{p}-{i}").into_bytes()));
        assert_eq!(raw::produce(&mut c, "a", p, 5_000, b"after"), (0, 40));
    }
    // A compacted object's batches are adjacent: a cold read of 80 batches
    // takes one ranged GET per object and fetch, not one per batch.
    let objects = files(&data_dir, "obj").len() as u64;
    let read_gets = gets() - gets_before;
    eprintln!("cold read: {read_gets} GETs, {objects} compacted objects");
    assert!(
        read_gets <= 2 * objects + 2,
        "{read_gets} GETs for {objects} compacted objects"
    );
    drop(c);
    node.stop();
    log.shutdown(Duration::from_secs(5));
}

#[test]
fn small_compacted_objects_are_merged_and_retention_deletes_them() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    // Every pass writes less than 1 MiB, so each pass merges the previous
    // object into its new one: one object per partition at any time.
    let (node, log) = start(&bucket, 200, 1 << 20);
    let mut c = connect(&node);
    assert_eq!(
        raw::create_topic(&mut c, "m", 1, &[("retention.ms", "-1")]),
        0
    );
    let data_dir = bucket.join("data").join("3");
    for round in 0..4 {
        for i in 0..5 {
            let n = round * 5 + i;
            assert_eq!(
                raw::produce(&mut c, "m", 0, 1_000, format!("m{n}").as_bytes()),
                (0, n)
            );
        }
        // Wait for a pass that holds this round.
        let end = (round + 1) * 5;
        wait_until("a pass compacts the round", || {
            let objs = files(&data_dir, "obj");
            objs.len() == 1 && contains(&objs[0], format!("m{}", end - 1).as_bytes())
        });
    }
    let got = read_all(&mut c, "m", 0, 0, 20);
    assert_eq!(got.len(), 20);
    // Retention down to the last batch: the merged object still holds it,
    // so it stays; a new batch, compacted, then lets the old object go.
    assert_eq!(raw::produce(&mut c, "m", 0, 2_000, b"last"), (0, 20));
    let body = ferry_protocol::messages::RequestBody::IncrementalAlterConfigs(
        ferry_protocol::messages::incremental_alter_configs_request::IncrementalAlterConfigsRequest {
            resources: vec![ferry_protocol::messages::incremental_alter_configs_request::AlterConfigsResource {
                resource_type: 2,
                resource_name: "m".into(),
                configs: vec![ferry_protocol::messages::incremental_alter_configs_request::AlterableConfig {
                    name: "retention.ms".into(),
                    config_operation: 0,
                    value: Some("1000".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        },
    );
    raw::call(&mut c, 0, body);
    wait_until("retention drops the old batches", || {
        raw::list_offset(&mut c, "m", 0, -2) == 20
    });
    wait_until(
        "the compacted object holding only expired batches is deleted",
        || {
            let objs = files(&data_dir, "obj");
            objs.len() == 1 && !contains(&objs[0], b"m19") && contains(&objs[0], b"last")
        },
    );
    assert_eq!(
        read_all(&mut c, "m", 0, 20, 21),
        vec![(20, b"last".to_vec())]
    );
    drop(c);
    node.stop();
    log.shutdown(Duration::from_secs(5));
}
