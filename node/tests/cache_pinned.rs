//! The log cache's bound (`ferry.cache.bytes.max`) holds in the arena
//! memory its batches pin, not only in their own bytes: many connections
//! each producing a few small batches (each connection's batches pin its
//! own read chunk) leave no more arena memory in use than the bound, once
//! the connections are gone, and every record is still read back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use ferry_node::arena::CHUNK_BYTES_MIN;
use ferry_node::durable::MemoryLog;
use ferry_node::node::NodeSettings;
use ferry_node::server;
use std::collections::HashMap;
use std::net::TcpStream;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CACHE_MAX: usize = 1 << 20;
const CONNECTIONS: usize = 48;
const PRODUCES: usize = 20;
const PARTITIONS: i32 = 8;

fn connect(addr: std::net::SocketAddr) -> TcpStream {
    let c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c
}

#[test]
fn the_cache_bound_holds_in_pinned_arena_bytes_under_small_batches() {
    let node = server::start(
        NodeSettings {
            cache_bytes_max: CACHE_MAX,
            ..NodeSettings::local(1)
        },
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(MemoryLog::new()),
        Default::default(),
        HashMap::new(),
    )
    .unwrap();
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
    // Without eviction by pinned bytes every connection's chunk would
    // still be held.
    assert!(
        in_use() < (CONNECTIONS * CHUNK_BYTES_MIN / 2) as u64,
        "arena in use {}",
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
