//! The log cache's bound (`ferry.cache.bytes.max`) holds in the arena
//! memory its batches pin, not only in their own bytes: many connections
//! each producing a few small batches (each connection's batches pin its
//! own read chunk) leave no more arena memory in use than the bound, once
//! the connections are gone, and every record is still read back. A chunk
//! whose batches both shards cache is charged once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use ferry_node::arena::CHUNK_BYTES_MIN;
use ferry_node::broker::server;
use ferry_node::node::NodeSettings;
use ferry_node::storage::durable::MemoryLog;
use std::collections::HashMap;
use std::net::TcpStream;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CACHE_MAX: usize = 1 << 20;
const CONNECTIONS: usize = 48;
const PRODUCES: usize = 20;
const PARTITIONS: i32 = 8;

/// A two-shard node on an in-memory log with these settings.
fn start(settings: NodeSettings) -> server::RunningNode {
    server::start(
        settings,
        Arc::new(MemoryLog::new()),
        Default::default(),
        HashMap::new(),
    )
    .unwrap()
}

fn connect(addr: std::net::SocketAddr) -> TcpStream {
    let c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c
}

#[test]
fn the_cache_bound_holds_in_pinned_arena_bytes_under_small_batches() {
    let node = start(NodeSettings {
        cache_bytes_max: CACHE_MAX,
        ..NodeSettings::local(1)
    });
    let shards = 2;
    let ctx = node.ctx.clone();
    let metrics = &ctx.metrics;
    let mut c = connect(node.addr);
    assert_eq!(
        common::raw::create_topic(&mut c, "small", PARTITIONS, &[]),
        0
    );
    drop(c);
    let mut batch_bytes = 0usize;
    for conn in 0..CONNECTIONS {
        let mut c = connect(node.addr);
        for i in 0..PRODUCES {
            let key = format!("c{conn}-{i}");
            let p = ((conn * PRODUCES + i) % PARTITIONS as usize) as i32;
            let (err, _) = common::raw::produce(&mut c, "small", p, 1, key.as_bytes());
            assert_eq!(err, 0);
            batch_bytes += 70 + key.len();
        }
    }
    // The old accounting (batch bytes alone) would never have evicted.
    assert!(batch_bytes < CACHE_MAX / 4, "{batch_bytes}");
    // One more batch per partition, once the others are durable, so each
    // shard evicts with everything before it evictable.
    std::thread::sleep(Duration::from_millis(200));
    let mut c = connect(node.addr);
    for p in 0..PARTITIONS {
        assert_eq!(common::raw::produce(&mut c, "small", p, 1, b"last").0, 0);
    }
    drop(c);
    let in_use = || -> u64 {
        (0..shards)
            .map(|s| metrics.arena(s).in_use_bytes.load(Relaxed))
            .sum()
    };
    // Closed connections give their chunks back (once their reads end).
    let deadline = Instant::now() + Duration::from_secs(10);
    let slack = CHUNK_BYTES_MIN as i64;
    loop {
        let pinned: Vec<i64> = (0..shards).map(|s| metrics.cache_pinned_bytes(s)).collect();
        let charged: i64 = pinned.iter().sum();
        let held = in_use();
        let ok = pinned.iter().all(|&p| p <= CACHE_MAX as i64 + slack)
            && held <= charged as u64
            && charged > 0;
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "cache charged {pinned:?}, arena in use {held}, bound {CACHE_MAX}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // What the caches keep is within the node's bound (each chunk is
    // charged once, so the two shards' caches may keep up to twice the
    // per-shard bound), where without eviction by pinned bytes every
    // connection's chunk (3 MiB) would still be held.
    let bound = (shards * (CACHE_MAX + CHUNK_BYTES_MIN)) as u64;
    assert!(
        in_use() <= bound && in_use() < (CONNECTIONS * CHUNK_BYTES_MIN) as u64,
        "arena in use {}, bound {bound}",
        in_use()
    );
    // Evicted batches come back from the durable log.
    let mut c = connect(node.addr);
    for p in 0..PARTITIONS {
        let mut offset = 0;
        let mut keys = Vec::new();
        while offset < (CONNECTIONS * PRODUCES) as i64 / i64::from(PARTITIONS) + 1 {
            let (err, recs) = common::raw::fetch(&mut c, "small", p, offset);
            assert_eq!(err, 0);
            assert!(!recs.is_empty(), "partition {p} offset {offset}");
            for (o, k) in recs {
                assert_eq!(o, offset);
                keys.push(k);
                offset += 1;
            }
        }
        let want: Vec<Vec<u8>> = (0..CONNECTIONS * PRODUCES)
            .filter(|n| (n % PARTITIONS as usize) as i32 == p)
            .map(|n| format!("c{}-{}", n / PRODUCES, n % PRODUCES).into_bytes())
            .chain(std::iter::once(b"last".to_vec()))
            .collect();
        assert_eq!(keys, want, "partition {p}");
    }
    drop(c);
    node.stop();
}

/// One Produce request (acks=all) with a one-record batch for each of
/// `partitions`; returns each partition's error code.
fn produce_to_all(c: &mut TcpStream, topic: &str, partitions: i32, key: &[u8]) -> Vec<i16> {
    use ferry_protocol::messages::*;
    use ferry_protocol::records::{NewRecord, RecordBatchBuilder};
    use ferry_protocol::wire::Message;
    let body = RequestBody::Produce(produce_request::ProduceRequest {
        acks: -1,
        timeout_ms: 10_000,
        topic_data: vec![produce_request::TopicProduceData {
            name: topic.into(),
            partition_data: (0..partitions)
                .map(|index| {
                    let mut b = RecordBatchBuilder::new();
                    b.push(NewRecord::new(1, Some(key), Some(b"v")));
                    produce_request::PartitionProduceData {
                        index,
                        records: Some(b.build().unwrap().into()),
                        ..Default::default()
                    }
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    });
    let resp = common::raw::call(c, 9, body);
    produce_response::ProduceResponse::decode(&resp, 9)
        .unwrap()
        .responses
        .iter()
        .flat_map(|t| t.partition_responses.iter().map(|p| p.error_code))
        .collect()
}

#[test]
fn a_chunk_whose_batches_two_shards_cache_is_charged_once() {
    let node = start(NodeSettings {
        cache_bytes_max: 64 << 20,
        ..NodeSettings::local(1)
    });
    let shards = 2;
    let metrics = &node.ctx.metrics;
    let mut c = connect(node.addr);
    assert_eq!(
        common::raw::create_topic(&mut c, "both", PARTITIONS, &[]),
        0
    );
    // Every request carries a batch for every partition, so its frame (in
    // this connection's chunk) is cached by both shards.
    for i in 0..50 {
        let codes = produce_to_all(&mut c, "both", PARTITIONS, format!("k{i}").as_bytes());
        assert_eq!(codes, vec![0; PARTITIONS as usize]);
    }
    let cached: Vec<i64> = (0..shards).map(|s| metrics.cache_bytes(s)).collect();
    assert!(
        cached.iter().all(|&b| b > 0),
        "both shards cache: {cached:?}"
    );
    let pinned: Vec<i64> = (0..shards).map(|s| metrics.cache_pinned_bytes(s)).collect();
    let in_use: u64 = (0..shards)
        .map(|s| metrics.arena(s).in_use_bytes.load(Relaxed))
        .sum();
    let charged: i64 = pinned.iter().sum();
    // Charged once: no more than the arena bytes in use (charging each
    // chunk per shard would count this connection's chunk twice), and at
    // least its chunk.
    assert!(
        charged > 0 && charged as u64 <= in_use,
        "charged {pinned:?}, arena in use {in_use}"
    );
    // To the lower-numbered shard.
    assert_eq!(pinned[1], 0, "{pinned:?}");
    drop(c);
    node.stop();
}

#[test]
fn batches_retention_drops_leave_the_cache_without_waiting_for_eviction() {
    let node = start(NodeSettings {
        cache_bytes_max: 64 << 20,
        retention_check_ms: 100,
        ..NodeSettings::local(1)
    });
    let shards = 2;
    let metrics = &node.ctx.metrics;
    let mut c = connect(node.addr);
    assert_eq!(
        common::raw::create_topic(&mut c, "old", PARTITIONS, &[("retention.ms", "1000")]),
        0
    );
    // Timestamp 1: every batch is past retention at once; retention keeps
    // each partition's last batch.
    for i in 0..30 {
        let codes = produce_to_all(&mut c, "old", PARTITIONS, format!("k{i}").as_bytes());
        assert_eq!(codes, vec![0; PARTITIONS as usize]);
    }
    let cached = || -> i64 { (0..shards).map(|s| metrics.cache_bytes(s)).sum() };
    // The size of the largest batch sent, from its encoding: measured from
    // the cache it would depend on how many batches retention took already.
    let one_batch = {
        let mut b = ferry_protocol::records::RecordBatchBuilder::new();
        b.push(ferry_protocol::records::NewRecord::new(
            1,
            Some(b"k29"),
            Some(b"v"),
        ));
        b.build().unwrap().len() as i64
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    // What is left is one batch per partition.
    while cached() > one_batch * i64::from(PARTITIONS) {
        assert!(
            Instant::now() < deadline,
            "the cache still counts {} B of dropped batches (a batch is {one_batch} B)",
            cached()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(cached() > 0, "the last batches stay cached");
    drop(c);
    node.stop();
}
