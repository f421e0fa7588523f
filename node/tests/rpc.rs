//! The node-to-node RPC layer over real TCP: a test handler served through
//! `serve_frame` on one executor, an `RpcClient` on another. Pipelining
//! with out-of-order answers, timeouts, broken connections, reconnects,
//! hostile frames; and the conn.rs hook on a real node. Every wait is
//! bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use bytes::{Bytes, BytesMut};
use ferry_node::cluster::rpc::*;
use ferry_node::cluster::Member;
use ferry_node::node::NodeSettings;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Partition numbers that make the test handler misbehave.
const NEVER_ANSWER: i32 = -1;
const KILL_CONNECTION: i32 = -2;

/// Answers each message with values derived from the request, after a
/// delay that varies by request, so answers leave out of order.
struct TestHandler;

async fn jitter(n: i64) {
    glommio::timer::sleep(Duration::from_micros((n.unsigned_abs() % 5) * 700)).await;
}

impl RpcHandler for TestHandler {
    async fn handoff_commit(&self, req: HandoffCommit) -> HandoffCommitResponse {
        jitter(req.view_revision as i64).await;
        HandoffCommitResponse {
            partitions: req
                .partitions
                .iter()
                .map(|p| {
                    p.batches
                        .iter()
                        .map(|b| BatchResult {
                            error_code: 0,
                            base_offset: b.position as i64 + req.from_node as i64,
                            log_start: p.partition as i64,
                        })
                        .collect()
                })
                .collect(),
        }
    }

    async fn replica_read(&self, req: ReplicaRead) -> ReplicaReadResponse {
        if req.partition == NEVER_ANSWER {
            futures_lite::future::pending::<()>().await;
        }
        jitter(req.from_offset).await;
        ReplicaReadResponse {
            error_code: 0,
            high_watermark: req.from_offset + 1,
            log_start: 0,
            leader_epoch: req.partition,
            entries: vec![ReplicaEntry {
                base_offset: req.from_offset,
                last_offset: req.from_offset,
                max_timestamp: 0,
                key: req.topic.clone(),
                position: req.max_bytes as u64,
                len: 1,
                crc: 2,
            }],
        }
    }

    async fn forward(&self, req: Forward) -> ForwardResponse {
        jitter(req.frame.len() as i64).await;
        ForwardResponse {
            error_code: 0,
            frame: Some(req.frame),
        }
    }
}

struct TestServer {
    addr: SocketAddr,
    /// Connections accepted.
    accepted: Arc<AtomicUsize>,
    /// Answers written after one with a higher correlation id.
    out_of_order: Arc<AtomicUsize>,
    stop: Option<futures_channel::oneshot::Sender<()>>,
    executor: Option<glommio::ExecutorJoinHandle<()>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(e) = self.executor.take() {
            let _ = e.join();
        }
    }
}

/// A server on its own executor: every frame goes through `decode_call`
/// (an undecodable one closes the connection) and `serve_frame`, and
/// answers are written as they complete.
fn test_server() -> TestServer {
    let accepted = Arc::new(AtomicUsize::new(0));
    let out_of_order = Arc::new(AtomicUsize::new(0));
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = futures_channel::oneshot::channel::<()>();
    let (acc, ooo) = (accepted.clone(), out_of_order.clone());
    let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("rpc-test-server")
        .spawn(move || async move {
            let listener = glommio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            addr_tx
                .send(listener.local_addr().expect("addr"))
                .expect("addr");
            let handler = Rc::new(TestHandler);
            let accept = async {
                loop {
                    let Ok(stream) = listener.accept().await else {
                        continue;
                    };
                    acc.fetch_add(1, Ordering::Relaxed);
                    glommio::spawn_local(serve_conn(handler.clone(), stream, ooo.clone())).detach();
                }
            };
            futures_lite::future::or(accept, async {
                let _ = stop_rx.await;
            })
            .await;
        })
        .expect("executor");
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("server address");
    TestServer {
        addr,
        accepted,
        out_of_order,
        stop: Some(stop_tx),
        executor: Some(executor),
    }
}

async fn serve_conn(
    handler: Rc<TestHandler>,
    stream: glommio::net::TcpStream,
    out_of_order: Arc<AtomicUsize>,
) {
    let (mut rd, mut wr) = futures_lite::io::split(stream);
    let (tx, rx) = glommio::channels::local_channel::new_unbounded::<Vec<Bytes>>();
    let tx = Rc::new(tx);
    let writer = glommio::spawn_local(async move {
        let mut last = i32::MIN;
        while let Some(segs) = rx.recv().await {
            let whole = ferry_protocol::frame::concat(&segs);
            let id = i32::from_be_bytes([whole[4], whole[5], whole[6], whole[7]]);
            if id < last {
                out_of_order.fetch_add(1, Ordering::Relaxed);
            }
            last = last.max(id);
            if wr.write_all(&whole).await.is_err() {
                return;
            }
        }
    });
    let frames = ferry_protocol::frame::FrameReader::new(1 << 20);
    let mut buf = BytesMut::new();
    'conn: loop {
        loop {
            let f = match frames.next_frame(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(_) => break 'conn,
            };
            match decode_call(&f) {
                Err(_) => break 'conn,
                Ok(RpcCall {
                    body: RpcBody::ReplicaRead(r),
                    ..
                }) if r.partition == KILL_CONNECTION => break 'conn,
                Ok(_) => {}
            }
            let (h, tx) = (handler.clone(), tx.clone());
            glommio::spawn_local(async move {
                if let Some(segs) = serve_frame(&*h, &f).await {
                    let _ = tx.send(segs).await;
                }
            })
            .detach();
        }
        let mut chunk = [0u8; 8192];
        match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    // Dropping the writer task and the read half closes the socket.
    drop(writer);
}

use common::run_bounded;

fn member(node_id: i32, zone: &str, addr: SocketAddr) -> Member {
    Member::new(node_id, zone, addr.ip().to_string(), addr.port())
}

fn client() -> (RpcClient, Arc<RpcTraffic>) {
    let traffic = Arc::new(RpcTraffic::new());
    (RpcClient::new(traffic.clone(), 1 << 20), traffic)
}

fn read(i: i64, partition: i32) -> ReplicaRead {
    ReplicaRead {
        topic: format!("topic-{i}").into(),
        partition,
        from_offset: i,
        max_bytes: (i * 3) as i32,
        max_wait_ms: 0,
    }
}

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn a_thousand_pipelined_calls_on_one_connection_are_all_answered() {
    let server = test_server();
    let to = member(2, "zone-b", server.addr);
    let t0 = Instant::now();
    let traffic = run_bounded(60, move || async move {
        let (c, traffic) = client();
        let calls = (0..1000i64).map(|i| {
            let (c, to) = (&c, &to);
            async move {
                match i % 3 {
                    0 => {
                        let r = c.replica_read(to, &read(i, 1), 10 * SECOND).await.unwrap();
                        assert_eq!(r.high_watermark, i + 1);
                        assert_eq!(&*r.entries[0].key, format!("topic-{i}"));
                        assert_eq!(r.entries[0].position, (i * 3) as u64);
                    }
                    1 => {
                        let req = HandoffCommit {
                            from_node: 7,
                            view_revision: i as u64,
                            partitions: vec![HandoffPartition {
                                topic: "orders".into(),
                                topic_id: [1; 16],
                                partition: i as i32,
                                batches: (0..3)
                                    .map(|b| HandoffBatch {
                                        key: "handoff/a/1".into(),
                                        position: (i * 10 + b) as u64,
                                        len: 100,
                                        crc: 0,
                                        record_count: 1,
                                        last_offset_delta: 0,
                                        max_timestamp: 0,
                                        producer_id: -1,
                                        producer_epoch: -1,
                                        base_sequence: -1,
                                    })
                                    .collect(),
                            }],
                        };
                        let r = c.handoff_commit(to, &req, 10 * SECOND).await.unwrap();
                        assert_eq!(r.partitions.len(), 1);
                        let bases: Vec<i64> =
                            r.partitions[0].iter().map(|b| b.base_offset).collect();
                        assert_eq!(bases, vec![i * 10 + 7, i * 10 + 8, i * 10 + 9]);
                        assert_eq!(r.partitions[0][0].log_start, i);
                    }
                    _ => {
                        // Some large enough to go as their own segment.
                        let len = if i % 30 == 2 { 10_000 } else { i as usize };
                        let frame = Bytes::from(vec![(i % 251) as u8; len]);
                        let req = Forward {
                            client_host: "10.1.2.3".into(),
                            principal: "User:ANONYMOUS".into(),
                            frame: frame.clone(),
                        };
                        let r = c.forward(to, &req, 10 * SECOND).await.unwrap();
                        assert_eq!(r.frame, Some(frame));
                    }
                }
            }
        });
        futures_util::future::join_all(calls).await;
        assert!(c.is_connected(2));
        traffic.snapshot()
    });
    let took = t0.elapsed();
    eprintln!("1000 pipelined calls in {took:?}");
    assert_eq!(server.accepted.load(Ordering::Relaxed), 1, "one connection");
    assert!(
        server.out_of_order.load(Ordering::Relaxed) > 0,
        "the server should have answered out of order"
    );
    let kinds: Vec<&str> = traffic.iter().map(|r| r.1).collect();
    assert_eq!(kinds, vec!["forward", "handoff", "replica"], "{traffic:?}");
    for (zone, kind, out, inn) in &traffic {
        assert_eq!(zone, "zone-b");
        assert!(*out > 0 && *inn > 0, "{kind}: {out} out, {inn} in");
    }
    // 334 handoff calls of 3 batches: header, key table and batches.
    let handoff = traffic.iter().find(|r| r.1 == "handoff").unwrap();
    assert!(handoff.2 < 334 * 250, "{handoff:?}");
}

#[test]
fn a_call_nobody_answers_times_out_while_others_are_answered() {
    let server = test_server();
    let to = member(2, "zone-b", server.addr);
    run_bounded(30, move || async move {
        let (c, _) = client();
        let to = &to;
        let t = Instant::now();
        let stuck = async {
            let r = c
                .replica_read(to, &read(1, NEVER_ANSWER), Duration::from_millis(400))
                .await;
            (r, t.elapsed())
        };
        // Others keep being answered on the same connection meanwhile.
        let others = async {
            for i in 0..30 {
                let r = c.replica_read(to, &read(i, 1), 5 * SECOND).await.unwrap();
                assert_eq!(r.high_watermark, i + 1);
                glommio::timer::sleep(Duration::from_millis(20)).await;
            }
        };
        let ((r, took), ()) = futures_lite::future::zip(stuck, others).await;
        match r {
            Err(e @ RpcError::Timeout { .. }) => assert!(e.is_retriable()),
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_secs(2),
            "{took:?}"
        );
        // The connection was not silent, so it stays.
        assert!(c.is_connected(2));
        c.replica_read(to, &read(5, 1), 5 * SECOND).await.unwrap();
    });
    assert_eq!(server.accepted.load(Ordering::Relaxed), 1);
}

#[test]
fn a_connection_silent_for_a_whole_timeout_is_replaced() {
    let server = test_server();
    let to = member(2, "zone-b", server.addr);
    run_bounded(30, move || async move {
        let (c, _) = client();
        let to = &to;
        c.replica_read(to, &read(0, 1), 5 * SECOND).await.unwrap();
        let t = Instant::now();
        let (r1, r2) = (read(1, NEVER_ANSWER), read(2, NEVER_ANSWER));
        let short = c.replica_read(to, &r1, Duration::from_millis(200));
        // A longer call on the same connection fails as soon as the short
        // one finds the connection silent.
        let long = c.replica_read(to, &r2, 20 * SECOND);
        let (short, long) = futures_lite::future::zip(short, long).await;
        assert!(matches!(short, Err(RpcError::Timeout { .. })), "{short:?}");
        assert!(
            matches!(long, Err(RpcError::ConnectionLost { .. })),
            "{long:?}"
        );
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert!(!c.is_connected(2));
        let r = c.replica_read(to, &read(5, 1), 5 * SECOND).await.unwrap();
        assert_eq!(r.high_watermark, 6);
    });
    assert_eq!(server.accepted.load(Ordering::Relaxed), 2);
}

#[test]
fn a_broken_connection_fails_every_pending_call_and_the_next_call_reconnects() {
    let server = test_server();
    let to = member(2, "zone-b", server.addr);
    run_bounded(30, move || async move {
        let (c, _) = client();
        // Open the connection.
        c.replica_read(&to, &read(1, 1), 5 * SECOND).await.unwrap();
        let t = Instant::now();
        let (c, to) = (&c, &to);
        let stuck = (0..5).map(|i| async move {
            c.replica_read(to, &read(i, NEVER_ANSWER), 20 * SECOND)
                .await
        });
        let kill = async {
            glommio::timer::sleep(Duration::from_millis(50)).await;
            c.replica_read(to, &read(0, KILL_CONNECTION), 20 * SECOND)
                .await
        };
        let (results, killed) =
            futures_lite::future::zip(futures_util::future::join_all(stuck), kill).await;
        let took = t.elapsed();
        assert!(
            took < Duration::from_secs(5),
            "pending calls took {took:?} to fail"
        );
        for r in results.into_iter().chain([killed]) {
            match r {
                Err(e @ RpcError::ConnectionLost { .. }) => assert!(e.is_retriable()),
                other => panic!("expected a lost connection, got {other:?}"),
            }
        }
        // The next call reconnects.
        let r = c.replica_read(to, &read(9, 1), 5 * SECOND).await.unwrap();
        assert_eq!(r.high_watermark, 10);
    });
    assert_eq!(server.accepted.load(Ordering::Relaxed), 2);
}

#[test]
fn a_peer_that_moved_is_called_at_its_new_address() {
    let (a, b) = (test_server(), test_server());
    let (at_a, at_b) = (member(3, "zone-c", a.addr), member(3, "zone-c", b.addr));
    run_bounded(30, move || async move {
        let (c, _) = client();
        c.replica_read(&at_a, &read(1, 1), 5 * SECOND)
            .await
            .unwrap();
        c.replica_read(&at_b, &read(2, 1), 5 * SECOND)
            .await
            .unwrap();
        c.replica_read(&at_b, &read(3, 1), 5 * SECOND)
            .await
            .unwrap();
        // Nobody listening: a retriable connect error, within the bound.
        let gone = member(4, "zone-c", "127.0.0.1:1".parse().unwrap());
        let e = c
            .replica_read(&gone, &read(4, 1), 5 * SECOND)
            .await
            .unwrap_err();
        assert!(matches!(e, RpcError::Connect { .. }), "{e:?}");
        assert!(e.is_retriable());
        c.forget(3);
        assert!(!c.is_connected(3));
    });
    assert_eq!(a.accepted.load(Ordering::Relaxed), 1);
    assert_eq!(b.accepted.load(Ordering::Relaxed), 1);
}

/// True if the server closes the connection within 5 s.
fn closed(conn: std::net::TcpStream) -> bool {
    common::closed_within(conn, Duration::from_secs(5))
}

fn frame(key: i16, version: i16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&((8 + payload.len()) as u32).to_be_bytes());
    v.extend_from_slice(&key.to_be_bytes());
    v.extend_from_slice(&version.to_be_bytes());
    v.extend_from_slice(&1i32.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// Frames that are not valid RPCs, each of which must close the
/// connection.
fn garbage() -> Vec<Vec<u8>> {
    let valid = |i: i32| {
        ferry_protocol::frame::concat(&encode_request_frame(i, &read(1, 1)).unwrap()).to_vec()
    };
    let mut v = vec![
        frame(HANDOFF_COMMIT, 0, &[0, 0, 0, 1]),
        frame(REPLICA_READ, 0, &[0xff, 0xff]),
        frame(FORWARD, 0, &[0, 0, 0x80, 0, 0, 0]),
        frame(32005, 0, &[]),
        frame(REPLICA_READ, 3, &valid(1)[12..]),
    ];
    // A valid frame with a trailing byte.
    let mut t = valid(2);
    t.push(0);
    let n = (t.len() - 4) as u32;
    t[..4].copy_from_slice(&n.to_be_bytes());
    v.push(t);
    // Random payloads after valid headers.
    let mut x = 0x1234_5678_9abc_def0u64;
    for i in 0..40 {
        let len = (i * 7) % 90;
        let payload: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        if decode_call(&Bytes::from(frame(HANDOFF_COMMIT + (i % 3) as i16, 0, &payload)).slice(4..))
            .is_err()
        {
            v.push(frame(HANDOFF_COMMIT + (i % 3) as i16, 0, &payload));
        }
    }
    v
}

#[test]
fn garbage_frames_close_the_connection_and_the_server_keeps_serving() {
    let server = test_server();
    for g in garbage() {
        let mut c = std::net::TcpStream::connect(server.addr).unwrap();
        c.write_all(&g).unwrap();
        assert!(closed(c), "garbage {g:?} was not refused");
    }
    let to = member(2, "zone-b", server.addr);
    run_bounded(30, move || async move {
        let (c, _) = client();
        let r = c.replica_read(&to, &read(1, 1), 5 * SECOND).await.unwrap();
        assert_eq!(r.high_watermark, 2);
    });
}

/// A real node on a free port of 127.0.0.1, its durable log in memory.
fn memory_node(settings: NodeSettings) -> ferry_node::broker::server::RunningNode {
    ferry_node::broker::server::start(
        settings,
        Arc::new(ferry_node::storage::durable::MemoryLog::new()),
        Default::default(),
        Default::default(),
    )
    .expect("the node starts")
}

/// The conn.rs hook on a real node: RPC frames reach the shard's handler
/// (for now the stand-in, which refuses every call), garbage RPC frames
/// close the connection, and Kafka requests still work.
#[test]
fn a_real_node_serves_rpcs_on_its_kafka_listener() {
    let node = memory_node(NodeSettings {
        frame_bytes_max: 1 << 20,
        ..NodeSettings::local(1)
    });
    let addr = node.addr;
    for g in garbage() {
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.write_all(&g).unwrap();
        assert!(closed(c), "garbage {g:?} was not refused");
    }
    let to = member(1, "zone-a", addr);
    run_bounded(30, move || async move {
        let (c, traffic) = client();
        let r = c.replica_read(&to, &read(1, 0), 5 * SECOND).await.unwrap();
        assert_ne!(r.error_code, 0);
        // Pipelined, past the node's limit of requests in flight per
        // connection (past it, the node stops reading until answers go).
        let past_the_limit = ferry_node::broker::conn::INFLIGHT_REQUESTS_MAX as i64 + 300;
        let reads: Vec<ReplicaRead> = (0..past_the_limit).map(|i| read(i, 0)).collect();
        let rs = futures_util::future::join_all(
            reads.iter().map(|r| c.replica_read(&to, r, 10 * SECOND)),
        )
        .await;
        assert_eq!(rs.len() as i64, past_the_limit);
        assert!(rs.into_iter().all(|r| r.unwrap().error_code != 0));
        assert!(c.is_connected(1));
        let req = HandoffCommit {
            from_node: 2,
            view_revision: 1,
            partitions: vec![HandoffPartition {
                topic: "t".into(),
                topic_id: [0; 16],
                partition: 0,
                batches: vec![],
            }],
        };
        let r = c.handoff_commit(&to, &req, 5 * SECOND).await.unwrap();
        assert_eq!(r.partitions, vec![vec![]]);
        let r = c
            .forward(
                &to,
                &Forward {
                    client_host: "10.0.0.1".into(),
                    principal: "User:ANONYMOUS".into(),
                    frame: Bytes::from_static(b"\0\x12\0\0\0\0\0\x01\0\0"),
                },
                5 * SECOND,
            )
            .await
            .unwrap();
        // A forwarded ApiVersions request (correlation id 1) is served as
        // if the client had sent it: the whole response frame comes back.
        assert_eq!(r.error_code, 0);
        let frame = r.frame.expect("a response frame");
        assert_eq!(&frame[4..8], &1i32.to_be_bytes());
        assert_eq!(traffic.snapshot().len(), 3);
    });
    // A Kafka client on the same port is unaffected.
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = ferry_protocol::frame::concat(
        &ferry_protocol::frame::encode_request(
            77,
            Some("t"),
            0,
            &ferry_protocol::messages::RequestBody::ApiVersions(Default::default()),
        )
        .unwrap(),
    );
    c.write_all(&req).unwrap();
    let mut size = [0u8; 4];
    c.read_exact(&mut size).unwrap();
    let mut resp = vec![0u8; u32::from_be_bytes(size) as usize];
    c.read_exact(&mut resp).unwrap();
    assert_eq!(&resp[..4], &77i32.to_be_bytes());
    node.stop();
}

/// A handoff commit is checked before it touches a log: one from a node
/// outside the view, or whose batch fields no client batch could have (a
/// negative or mismatched offset delta, no record), is refused and moves
/// nothing; one naming no object it could have written is refused too.
/// (The object checks, and a commit that is taken, are in
/// `a_handoff_commit_must_name_its_own_object_with_its_crc_and_header`.)
#[test]
fn a_handoff_commit_is_checked_before_it_changes_a_log() {
    let node = memory_node(NodeSettings::local(1));
    let addr = node.addr;
    let mut k = std::net::TcpStream::connect(addr).unwrap();
    k.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(common::raw::create_topic(&mut k, "h", 1, &[]), 0);
    let topic_id = topic_id(&mut k, "h");
    let revision = node.ctx.cluster.published().load().revision();
    let batch = |last_offset_delta: i32, record_count: i32| HandoffBatch {
        key: "handoff/1/00000000000000000000.wal".into(),
        position: 0,
        len: 100,
        crc: 0,
        record_count,
        last_offset_delta,
        max_timestamp: 1,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    };
    let commit = move |from_node: i32, b: HandoffBatch| HandoffCommit {
        from_node,
        view_revision: revision,
        partitions: vec![HandoffPartition {
            topic: "h".into(),
            topic_id,
            partition: 0,
            batches: vec![b],
        }],
    };
    let stale = |mut c: HandoffCommit| {
        c.view_revision += 1;
        c
    };
    let to = member(1, "zone-a", addr);
    let codes = run_bounded(30, move || async move {
        let (c, _) = client();
        let mut codes = Vec::new();
        for req in [
            commit(2, batch(0, 1)),        // node 2 is not in the view
            stale(commit(1, batch(0, 1))), // another view revision
            commit(1, batch(-5, -4)),      // a negative delta
            commit(1, batch(3, 1)),        // a delta that does not match the count
            commit(1, batch(-1, 0)),       // no record
            commit(1, batch(0, 1)),        // well formed, but no object of its own
        ] {
            let r = c.handoff_commit(&to, &req, 5 * SECOND).await.unwrap();
            codes.push(r.partitions[0][0].error_code);
        }
        codes
    });
    assert_eq!(
        codes,
        [6, 6, 87, 87, 87, 31],
        "NOT_LEADER x2, INVALID_RECORD x3, CLUSTER_AUTHORIZATION_FAILED"
    );
    // Nothing moved the log.
    assert_eq!(common::raw::list_offset(&mut k, "h", 0, -1), 0);
    node.stop();
}

/// The leader reads a handed-off batch back before appending it: the key
/// must be a handoff object of the calling node, the bytes there must have
/// the CRC32C the call states and be one Kafka batch whose header is the
/// call's. A commit naming another node's object, a WAL object, a missing
/// object, a wrong CRC or a header that lies is refused and moves nothing;
/// the honest one is taken. (The objects here are written straight into
/// the bucket directory: the leader reads a byte range, whatever wrote it.)
#[test]
fn a_handoff_commit_must_name_its_own_object_with_its_crc_and_header() {
    let dir = tempfile::tempdir().unwrap();
    let (node, mut k, topic_id, revision) = bucket_node(store_in(dir.path()), "h");
    // Seven bytes of something else first: the batch is a range.
    let honest = one_record_batch_at(
        dir.path(),
        "handoff/1/00000000000000000005.wal",
        b"garbage",
        None,
        b"k",
    );
    for key in [
        "handoff/2/00000000000000000005.wal",
        "wal/1/00000000000000099999.wal",
    ] {
        std::fs::create_dir_all(dir.path().join(key).parent().unwrap()).unwrap();
        std::fs::copy(dir.path().join(&*honest.key), dir.path().join(key)).unwrap();
    }
    let with = |change: &dyn Fn(&mut HandoffBatch)| {
        let mut b = honest.clone();
        change(&mut b);
        HandoffCommit {
            from_node: 1,
            view_revision: revision,
            partitions: vec![HandoffPartition {
                topic: "h".into(),
                topic_id,
                partition: 0,
                batches: vec![b],
            }],
        }
    };
    let commits = vec![
        with(&|b| b.key = "handoff/2/00000000000000000005.wal".into()),
        with(&|b| b.key = "wal/1/00000000000000099999.wal".into()),
        with(&|b| b.key = "handoff/1/00000000000000000009.wal".into()),
        with(&|b| b.crc ^= 1),
        with(&|b| b.position = 6),
        with(&|b| {
            b.record_count = 2;
            b.last_offset_delta = 1;
        }),
        with(&|b| b.max_timestamp += 1),
        with(&|_| {}),
    ];
    let to = member(1, "zone-a", node.addr);
    let codes = run_bounded(30, move || async move {
        let (c, _) = client();
        let mut codes = Vec::new();
        for req in &commits {
            let r = c.handoff_commit(&to, req, 5 * SECOND).await.unwrap();
            codes.push(r.partitions[0][0].error_code);
        }
        codes
    });
    assert_eq!(
        codes,
        [31, 31, 2, 2, 2, 87, 87, 0],
        "another node's object and a WAL object: CLUSTER_AUTHORIZATION_FAILED; \
         a missing object, a wrong CRC, a shifted range: CORRUPT_MESSAGE; \
         a header that lies: INVALID_RECORD; the honest commit: taken"
    );
    // Only the honest commit moved the log, and its record reads back.
    assert_eq!(common::raw::list_offset(&mut k, "h", 0, -1), 1);
    assert_eq!(
        common::raw::fetch(&mut k, "h", 0, 0),
        (0, vec![(0, b"k".to_vec())]),
        "the handed-off record reads back at offset 0"
    );
    node.stop();
}

/// Handoff commits of one partition are appended in the order they came,
/// though the leader reads their batches back from the bucket out of order
/// (and serves them from its cache afterwards):
/// an idempotent producer's sequence 0 (in an object that reads slowly) and
/// sequence 1 (in one that reads at once), committed back to back, land at
/// offsets 0 and 1. Appended as their reads finished, sequence 1 would come
/// first to a partition that has never seen the producer and be refused as
/// out of order, which librdkafka takes as fatal.
#[test]
fn handoff_commits_of_a_partition_are_appended_in_the_order_they_came() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Arc::new(ferry_wal::store::FaultyStore::new(store_in(dir.path())));
    let (node, mut k, topic_id, revision) = bucket_node(faulty.clone(), "ord");
    let commit = |seq: i32, key: &str| {
        let key_text = format!("k{seq}");
        let batch = one_record_batch_at(
            dir.path(),
            key,
            b"",
            Some((7000, 0, seq)),
            key_text.as_bytes(),
        );
        HandoffCommit {
            from_node: 1,
            view_revision: revision,
            partitions: vec![HandoffPartition {
                topic: "ord".into(),
                topic_id,
                partition: 0,
                batches: vec![batch],
            }],
        }
    };
    let slow = "handoff/1/00000000000000000010.wal";
    let first = commit(0, slow);
    let second = commit(1, "handoff/1/00000000000000000011.wal");
    faulty.set_slow_key(Some((slow.into(), Duration::from_millis(500))));
    let to = member(1, "zone-a", node.addr);
    let answers = run_bounded(30, move || async move {
        let (c, _) = client();
        let (a, b) = futures_lite::future::zip(
            c.handoff_commit(&to, &first, 10 * SECOND),
            c.handoff_commit(&to, &second, 10 * SECOND),
        )
        .await;
        let at = |r: HandoffCommitResponse| {
            let b = &r.partitions[0][0];
            (b.error_code, b.base_offset)
        };
        (at(a.unwrap()), at(b.unwrap()))
    });
    assert_eq!(
        answers,
        ((0, 0), (0, 1)),
        "sequence 0 at offset 0, then 1 at 1"
    );
    // The leader keeps the bytes it read back in its cache: the fetch
    // reads nothing from the bucket.
    let gets = faulty.get_count();
    assert_eq!(
        common::raw::fetch(&mut k, "ord", 0, 0),
        (0, vec![(0, b"k0".to_vec()), (1, b"k1".to_vec())])
    );
    assert_eq!(faulty.get_count(), gets, "the fetch read the bucket");
    node.stop();
}

/// A directory bucket's store.
fn store_in(dir: &std::path::Path) -> Arc<dyn object_store::ObjectStore> {
    ferry_wal::BucketUri::parse(&format!("file://{}", dir.display()))
        .unwrap()
        .build_store()
        .unwrap()
}

/// Node 1 alone on `store`, with a one-partition `topic`, a client
/// connection to it, the topic's id and the view revision.
fn bucket_node(
    store: Arc<dyn object_store::ObjectStore>,
    topic: &str,
) -> (
    ferry_node::broker::server::RunningNode,
    std::net::TcpStream,
    [u8; 16],
    u64,
) {
    let opened =
        ferry_node::storage::wal_log::WalLog::open(store, ferry_wal::WalConfig::new(1)).unwrap();
    let node = ferry_node::broker::server::start(
        NodeSettings::local(1),
        opened.log.clone(),
        opened.topics,
        opened.recovered,
    )
    .unwrap();
    let mut k = std::net::TcpStream::connect(node.addr).unwrap();
    k.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(common::raw::create_topic(&mut k, topic, 1, &[]), 0);
    let id = topic_id(&mut k, topic);
    let revision = node.ctx.cluster.published().load().revision();
    (node, k, id, revision)
}

/// Writes a one-record batch (record key `record_key`, of producer
/// `(id, epoch, sequence)` if given) after `prefix` into the bucket
/// directory at `key`, as a proxy's handoff object would hold it (the
/// leader reads a byte range, whatever wrote it), and answers the honest
/// handoff batch for it.
fn one_record_batch_at(
    dir: &std::path::Path,
    key: &str,
    prefix: &[u8],
    producer: Option<(i64, i16, i32)>,
    record_key: &[u8],
) -> HandoffBatch {
    let mut builder = ferry_protocol::records::RecordBatchBuilder::new();
    if let Some((id, epoch, seq)) = producer {
        builder = builder.producer(id, epoch, seq);
    }
    builder.push(ferry_protocol::records::NewRecord::new(
        1000,
        Some(record_key),
        Some(b"v"),
    ));
    let raw = Bytes::from(builder.build().unwrap());
    let parsed = ferry_protocol::records::RecordBatches::new(raw.clone())
        .next()
        .unwrap()
        .unwrap();
    let path = dir.join(key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, [prefix, &raw[..]].concat()).unwrap();
    let (producer_id, producer_epoch, base_sequence) = producer.unwrap_or((-1, -1, -1));
    HandoffBatch {
        key: key.into(),
        position: prefix.len() as u64,
        len: raw.len() as u32,
        crc: crc32c::crc32c(&raw),
        record_count: 1,
        last_offset_delta: 0,
        max_timestamp: parsed.max_timestamp(),
        producer_id,
        producer_epoch,
        base_sequence,
    }
}

/// A topic's id, by Metadata.
fn topic_id(k: &mut std::net::TcpStream, topic: &str) -> [u8; 16] {
    use ferry_protocol::messages::*;
    use ferry_protocol::wire::Message;
    let body = RequestBody::Metadata(metadata_request::MetadataRequest {
        topics: Some(vec![metadata_request::MetadataRequestTopic {
            name: Some(topic.into()),
            ..Default::default()
        }]),
        ..Default::default()
    });
    let resp = common::raw::call(k, 12, body);
    metadata_response::MetadataResponse::decode(&resp, 12)
        .unwrap()
        .topics[0]
        .topic_id
        .0
}

/// Ferry's own API keys are served on the listener that
/// `inter.broker.listener.name` names and nowhere else: on a client
/// listener a handoff commit closes the connection and moves no log.
#[test]
fn node_to_node_calls_are_served_on_the_inter_broker_listener_only() {
    use ferry_node::node::ListenerSpec;
    let client_listener = ListenerSpec {
        name: "CLIENT".into(),
        ..ListenerSpec::loopback()
    };
    let internal = ListenerSpec {
        name: "INTERNAL".into(),
        ..ListenerSpec::loopback()
    };
    let log = Arc::new(ferry_node::storage::durable::MemoryLog::new());
    let node = ferry_node::broker::server::start(
        NodeSettings {
            listeners: vec![client_listener, internal],
            inter_broker_listener: "INTERNAL".into(),
            ..NodeSettings::local(1)
        },
        log.clone(),
        Default::default(),
        Default::default(),
    )
    .unwrap();
    let (client_addr, internal_addr) = (node.listeners[0].1, node.listeners[1].1);
    assert_eq!(node.listeners[1].0, "INTERNAL");
    let mut k = std::net::TcpStream::connect(client_addr).unwrap();
    k.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(common::raw::create_topic(&mut k, "ib", 1, &[]), 0);
    let topic_id = topic_id(&mut k, "ib");
    let revision = node.ctx.cluster.published().load().revision();
    let commit = common::stored_batch_commit(&log, 1, revision, "ib", topic_id);
    let (on_client, on_internal) = run_bounded(30, move || async move {
        let (c, _) = client();
        let on_client = c
            .handoff_commit(&member(1, "zone-a", client_addr), &commit, 5 * SECOND)
            .await
            .map(|r| r.partitions[0][0].error_code);
        let on_internal = c
            .handoff_commit(&member(1, "zone-a", internal_addr), &commit, 5 * SECOND)
            .await
            .map(|r| r.partitions[0][0].error_code);
        (
            on_client.map_err(|e| e.to_string()),
            on_internal.map_err(|e| e.to_string()),
        )
    });
    let err = on_client.expect_err("a client listener answers no node-to-node call");
    assert!(err.contains("closed") || err.contains("lost"), "{err}");
    assert_eq!(on_internal, Ok(0), "the inter-broker listener takes it");
    // Only the call on the inter-broker listener moved the log.
    assert_eq!(common::raw::list_offset(&mut k, "ib", 0, -1), 1);
    // The client listener still serves clients.
    let mut again = std::net::TcpStream::connect(client_addr).unwrap();
    again
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(common::raw::list_offset(&mut again, "ib", 0, -1), 1);
    node.stop();
}
