//! Garbage, truncated and oversized frames sent to the node's port are
//! answered or closed, while another client keeps producing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use ferry_node::broker::server;
use ferry_node::node::NodeSettings;
use ferry_node::storage::durable::MemoryLog;
use ferry_protocol::frame::{concat, encode_request};
use ferry_protocol::messages::*;
use ferry_protocol::records::{NewRecord, RecordBatchBuilder};
use ferry_protocol::wire::Message;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn settings() -> NodeSettings {
    NodeSettings {
        num_partitions: 2,
        cache_bytes_max: 16 << 20,
        frame_bytes_max: 1 << 20,
        ..NodeSettings::local(1)
    }
}

fn produce_one(conn: &mut TcpStream, i: usize) -> (i16, i64) {
    common::raw::produce(conn, "steady", 0, 1, format!("k{i}").as_bytes())
}

/// True if the server closes the connection within 5 s.
fn closed(conn: TcpStream) -> bool {
    common::closed_within(conn, Duration::from_secs(5))
}

fn connect(addr: SocketAddr) -> TcpStream {
    let c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c
}

#[test]
fn bad_frames_are_closed_while_a_producer_keeps_going() {
    let node = server::start(
        settings(),
        Arc::new(MemoryLog::new()),
        Default::default(),
        HashMap::new(),
    )
    .unwrap();
    let addr = node.addr;
    let mut admin = connect(addr);
    assert_eq!(common::raw::create_topic(&mut admin, "steady", 1, &[]), 0);
    let stop = Arc::new(AtomicBool::new(false));
    let produced = Arc::new(AtomicUsize::new(0));
    let producer = {
        let (stop, produced) = (stop.clone(), produced.clone());
        std::thread::spawn(move || {
            let mut c = connect(addr);
            let mut last = -1;
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let (err, off) = produce_one(&mut c, i);
                assert_eq!(err, 0, "produce {i} failed while others misbehaved");
                assert_eq!(off, last + 1, "offsets must be dense");
                last = off;
                i += 1;
                produced.store(i, Ordering::Relaxed);
            }
        })
    };
    // The control: an idle connection is not taken for a closed one.
    assert!(
        !common::closed_within(connect(addr), Duration::from_secs(1)),
        "an idle connection must stay open"
    );
    // Garbage: a size prefix then random bytes that are no request.
    let mut c = connect(addr);
    c.write_all(&[0, 0, 0, 12, 0x7f, 0x7f, 0, 1, 0, 0, 0, 1, 9, 9, 9, 9])
        .unwrap();
    assert!(closed(c), "unknown API key must close the connection");
    // Oversized: a frame over socket.request.max.bytes is refused from its prefix.
    let mut c = connect(addr);
    c.write_all(&(2u32 << 20).to_be_bytes()).unwrap();
    assert!(closed(c), "oversized frame must close the connection");
    // Negative size.
    let mut c = connect(addr);
    c.write_all(&(-5i32).to_be_bytes()).unwrap();
    assert!(closed(c), "negative size must close the connection");
    // A produce request cut short inside its frame.
    let mut c = connect(addr);
    let mut b = RecordBatchBuilder::new();
    b.push(NewRecord::new(1, Some(b"k"), Some(b"v")));
    let full = concat(
        &encode_request(
            1,
            Some("x"),
            9,
            &RequestBody::Produce(produce_request::ProduceRequest {
                acks: -1,
                topic_data: vec![produce_request::TopicProduceData {
                    name: "steady".into(),
                    partition_data: vec![produce_request::PartitionProduceData {
                        index: 0,
                        records: Some(b.build().unwrap().into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }),
        )
        .unwrap(),
    );
    let mut cut = full.to_vec();
    let new_len = (cut.len() - 4 - 30) as u32;
    cut[..4].copy_from_slice(&new_len.to_be_bytes());
    cut.truncate(4 + new_len as usize);
    c.write_all(&cut).unwrap();
    assert!(closed(c), "a truncated request must close the connection");
    // A corrupt batch (CRC mismatch) is answered with CORRUPT_MESSAGE, not a close.
    let mut c = connect(addr);
    let mut bad = full.to_vec();
    let n = bad.len();
    // The last three bytes are tagged-field counts; the one before is data.
    bad[n - 4] ^= 0xff;
    c.write_all(&bad).unwrap();
    let mut size = [0u8; 4];
    c.read_exact(&mut size).unwrap();
    let mut resp = vec![0u8; u32::from_be_bytes(size) as usize];
    c.read_exact(&mut resp).unwrap();
    let r = produce_response::ProduceResponse::decode(&Bytes::from(resp).slice(5..), 9).unwrap();
    assert_eq!(
        r.responses[0].partition_responses[0].error_code, 2,
        "CORRUPT_MESSAGE"
    );
    // Slow drip of a valid request, one byte at a time, is still served.
    let mut c = connect(addr);
    let api = concat(
        &encode_request(
            3,
            Some("drip"),
            3,
            &RequestBody::ApiVersions(api_versions_request::ApiVersionsRequest {
                client_software_name: "drip".into(),
                client_software_version: "1".into(),
                ..Default::default()
            }),
        )
        .unwrap(),
    );
    for byte in api.iter() {
        c.write_all(&[*byte]).unwrap();
    }
    let mut size = [0u8; 4];
    c.read_exact(&mut size).unwrap();
    assert!(u32::from_be_bytes(size) > 10);

    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    producer.join().expect("the steady producer must not fail");
    assert!(
        produced.load(Ordering::Relaxed) > 10,
        "the producer made progress"
    );
    node.stop();
}

/// How long an ApiVersions call takes on a fresh connection while another
/// connection holds a Fetch that long-polls for `poll_ms`, on a one-shard
/// node whose `queued.max.request.bytes` is `queued`.
fn api_versions_while_a_fetch_waits(queued: Option<u64>, poll_ms: i32) -> Duration {
    let node = server::start(
        NodeSettings {
            shards: 1,
            queued_request_bytes_max: queued,
            ..settings()
        },
        Arc::new(MemoryLog::new()),
        Default::default(),
        HashMap::new(),
    )
    .unwrap();
    let mut admin = connect(node.addr);
    assert_eq!(common::raw::create_topic(&mut admin, "quiet", 1, &[]), 0);
    // A fetch past the (empty) log's end waits up to poll_ms for data.
    let fetch = common::raw::fetch_request("quiet", 0, 0, poll_ms);
    let mut poller = connect(node.addr);
    poller
        .write_all(&concat(
            &encode_request(1, Some("poller"), 11, &fetch).unwrap(),
        ))
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut other = connect(node.addr);
    let started = std::time::Instant::now();
    common::raw::call(&mut other, 3, RequestBody::ApiVersions(Default::default()));
    let took = started.elapsed();
    node.stop();
    took
}

/// `queued.max.request.bytes` bounds what clients can make a node hold:
/// with a bound of one byte, a Fetch waiting for data holds it, and the
/// shard reads no other request until that Fetch is answered; with the
/// default bound, the other request is answered at once.
#[test]
fn past_queued_max_request_bytes_the_node_stops_reading_requests() {
    let bounded = api_versions_while_a_fetch_waits(Some(1), 3000);
    assert!(
        bounded >= Duration::from_millis(2000),
        "answered after {bounded:?} while the bound was taken"
    );
    let default = api_versions_while_a_fetch_waits(
        Some(ferry_node::config::QUEUED_REQUEST_BYTES_MAX_DEFAULT),
        3000,
    );
    assert!(
        default < Duration::from_millis(1500),
        "answered after {default:?} with room to spare"
    );
}

/// InitProducerId naming another producer's id and epoch gets a fresh id
/// (Kafka's rule without a transactional id), so it cannot bump that
/// producer's epoch: the first producer goes on writing at its epoch.
#[test]
fn init_producer_id_naming_another_producer_cannot_fence_it() {
    let node = server::start(
        settings(),
        Arc::new(MemoryLog::new()),
        Default::default(),
        HashMap::new(),
    )
    .unwrap();
    let mut k = TcpStream::connect(node.addr).unwrap();
    k.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(common::raw::create_topic(&mut k, "pid", 1, &[]), 0);
    let (a, epoch) = common::raw::init_producer_id(&mut k, -1, -1);
    assert_eq!(epoch, 0);
    assert_eq!(
        common::raw::produce_idempotent(&mut k, "pid", 0, (a, 0, 0)),
        0
    );
    // Another client names producer `a` and its epoch.
    let mut other = TcpStream::connect(node.addr).unwrap();
    other
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (b, b_epoch) = common::raw::init_producer_id(&mut other, a, 0);
    assert_ne!(b, a, "a fresh id, not producer a's");
    assert_eq!(b_epoch, 0);
    // Producer `a` is not fenced: its next batch at epoch 0 is taken.
    assert_eq!(
        common::raw::produce_idempotent(&mut k, "pid", 0, (a, 0, 1)),
        0
    );
    assert_eq!(common::raw::list_offset(&mut k, "pid", 0, -1), 2);
    node.stop();
}
