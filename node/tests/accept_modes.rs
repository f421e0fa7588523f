//! Both ways connections reach shards: SO_REUSEPORT listeners (the kernel
//! spreads connections by a hash of the address pair) and one acceptor on
//! shard 0 dealing them round-robin. Both serve every connection; the
//! acceptor spreads them exactly evenly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::raw;
use ferry_node::broker::server;
use ferry_node::node::NodeSettings;
use ferry_node::storage::durable::MemoryLog;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

fn per_shard_connections(metrics: &str) -> Vec<i64> {
    metrics
        .lines()
        .filter(|l| l.starts_with("ferry_connections{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect()
}

fn serve_eight_connections(acceptor: bool) -> Vec<i64> {
    let settings = NodeSettings {
        acceptor,
        ..NodeSettings::local(1)
    };
    let node = server::start(
        settings,
        Arc::new(MemoryLog::new()),
        Default::default(),
        Default::default(),
    )
    .unwrap();
    let mut conns: Vec<TcpStream> = (0..8)
        .map(|_| {
            let c = TcpStream::connect(node.addr).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            c
        })
        .collect();
    assert_eq!(raw::create_topic(&mut conns[0], "t", 4, &[]), 0);
    for (i, c) in conns.iter_mut().enumerate() {
        let (err, _) = raw::produce(c, "t", (i % 4) as i32, 1, b"k");
        assert_eq!(err, 0, "connection {i}");
    }
    let spread = per_shard_connections(&node.ctx.metrics.render(""));
    drop(conns);
    node.stop();
    spread
}

#[test]
fn reuseport_listeners_serve_every_connection() {
    let spread = serve_eight_connections(false);
    assert_eq!(spread.len(), 2);
    assert_eq!(spread.iter().sum::<i64>(), 8, "{spread:?}");
}

#[test]
fn the_acceptor_deals_connections_evenly() {
    let spread = serve_eight_connections(true);
    assert_eq!(spread, vec![4, 4]);
}
