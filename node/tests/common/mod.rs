//! Running `ferry dev` as a real process, and real clients against it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `ferry dev` process on a directory, killed with SIGKILL when dropped.
pub struct DevNode {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl DevNode {
    pub fn start(dir: &Path, port: u16, extra: &[&str]) -> DevNode {
        let mut n = DevNode {
            port,
            dir: dir.to_owned(),
            child: None,
        };
        n.spawn(extra);
        n
    }

    fn spawn(&mut self, extra: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("node.log"))
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
        cmd.args(["dev", "--dir"]).arg(self.dir.join("data"));
        cmd.args(["--port", &self.port.to_string()]);
        cmd.args(extra);
        cmd.stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        self.child = Some(cmd.spawn().expect("start ferry dev"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "ferry dev did not listen within 30 s; see {}",
                self.dir.join("node.log").display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `kill -9`, then start again on the same directory and port.
    pub fn kill9_and_restart(&mut self, extra: &[&str]) {
        self.kill9();
        self.spawn(extra);
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for DevNode {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// True if the server closes `conn` (end of stream, or a reset) within
/// `wait`. A read that times out means the connection is still open: false.
pub fn closed_within(mut conn: std::net::TcpStream, wait: Duration) -> bool {
    use std::io::Read;
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        conn.set_read_timeout(Some(left)).unwrap();
        match conn.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// Waits for `child` at most `limit`; past it, kills it and panics naming
/// `what`. Every test that runs a client or script bounds it this way.
pub fn wait_bounded(child: &mut Child, what: &str, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("poll the child") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} ran past {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a Python client script to completion (at most `secs`), asserting it
/// succeeds.
pub fn python(script: &str, args: &[&str], secs: u64) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(script);
    let mut child = Command::new("python3")
        .arg(&path)
        .args(args)
        .spawn()
        .expect("python3 must be installed (scripts/test.sh installs the clients)");
    let what = format!("{script} {args:?}");
    let status = wait_bounded(&mut child, &what, Duration::from_secs(secs));
    assert!(status.success(), "{what} failed: {status}");
}

/// A node with its durable log in memory, configured by `pairs` (plus
/// `node.id=1` and an unused bucket), with two shards; every key must be
/// known.
pub fn node_from_pairs(pairs: &[(&str, &str)]) -> ferry_node::broker::server::RunningNode {
    let mut all = vec![("node.id", "1"), ("s3.data.buckets", "0@file:///unused")];
    all.extend_from_slice(pairs);
    let config =
        ferry_node::config::Config::from_pairs(all, ferry_node::config::HostEnv::detect()).unwrap();
    assert!(config.unknown_keys.is_empty(), "{:?}", config.unknown_keys);
    ferry_node::broker::server::start(
        ferry_node::node::NodeSettings {
            shards: 2,
            ..ferry_node::node::NodeSettings::from_config(&config).unwrap()
        },
        std::sync::Arc::new(ferry_node::storage::durable::MemoryLog::new()),
        Default::default(),
        Default::default(),
    )
    .unwrap()
}

/// Replaces the cluster's security document (credentials and ACLs) with
/// `doc`, through the node's coordinator.
pub fn store_security_doc(
    node: &ferry_node::broker::server::RunningNode,
    doc: &ferry_node::security::SecurityDoc,
) {
    use ferry_node::cluster::Doc;
    let (version, _) = node.ctx.cluster.doc(Doc::Security);
    let put = node
        .ctx
        .cluster
        .put_doc(Doc::Security, version, doc.encode().into());
    futures_lite::future::block_on(put).unwrap().unwrap();
}

/// A handoff commit from `from_node` at `view_revision` of one well-formed
/// one-record batch for `topic`'s partition 0, in a handoff object that
/// does not exist: for calls refused before the leader reads it (see
/// [`stored_batch_commit`] for one it takes).
pub fn one_batch_commit(
    from_node: i32,
    view_revision: u64,
    topic: &str,
    topic_id: [u8; 16],
) -> ferry_node::cluster::rpc::HandoffCommit {
    use ferry_node::cluster::rpc::{HandoffBatch, HandoffCommit, HandoffPartition};
    HandoffCommit {
        from_node,
        view_revision,
        partitions: vec![HandoffPartition {
            topic: topic.into(),
            topic_id,
            partition: 0,
            batches: vec![HandoffBatch {
                key: format!("handoff/{from_node}/00000000000000000000.wal").into(),
                position: 0,
                len: 100,
                crc: 0,
                record_count: 1,
                last_offset_delta: 0,
                max_timestamp: 1,
                producer_id: -1,
                producer_epoch: -1,
                base_sequence: -1,
            }],
        }],
    }
}

/// [`one_batch_commit`] of a real one-record batch that `log` holds (as a
/// proxy's handoff object would): a commit the leader reads back and takes.
pub fn stored_batch_commit(
    log: &ferry_node::storage::durable::MemoryLog,
    from_node: i32,
    view_revision: u64,
    topic: &str,
    topic_id: [u8; 16],
) -> ferry_node::cluster::rpc::HandoffCommit {
    use ferry_node::storage::durable::{AppendEntry, WalAppender};
    use ferry_protocol::records::{NewRecord, RecordBatchBuilder, RecordBatches};
    let mut builder = RecordBatchBuilder::new();
    builder.push(NewRecord::new(1000, Some(b"k"), Some(b"v")));
    let raw = bytes::Bytes::from(builder.build().unwrap());
    let batch = RecordBatches::new(raw.clone()).next().unwrap().unwrap();
    let location = futures_lite::future::block_on(log.append(AppendEntry {
        topic: topic.into(),
        topic_id,
        partition: 0,
        base_offset: 0,
        last_offset: 0,
        max_timestamp: batch.max_timestamp(),
        record_count: 1,
        producer: Default::default(),
        segments: [raw, bytes::Bytes::new()],
        leader_epoch: 0,
        external: None,
    }))
    .unwrap();
    let mut commit = one_batch_commit(from_node, view_revision, topic, topic_id);
    let b = &mut commit.partitions[0].batches[0];
    b.key = location.key;
    b.position = location.position;
    b.len = location.len;
    b.crc = location.crc;
    b.max_timestamp = batch.max_timestamp();
    commit
}

/// The address `node` bound for listener `name`.
pub fn listener_addr(
    node: &ferry_node::broker::server::RunningNode,
    name: &str,
) -> std::net::SocketAddr {
    node.listeners
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, a)| *a)
        .unwrap_or_else(|| panic!("no listener {name}"))
}

/// Runs `f` on a fresh glommio executor and returns its result, failing
/// the test if it takes more than `secs`.
pub fn run_bounded<T: Send + 'static, F, Fut>(secs: u64, f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("test-client")
        .spawn(move || async move {
            let _ = tx.send(f().await);
        })
        .expect("executor");
    let r = rx
        .recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("test did not finish within {secs} s"));
    ex.join().expect("join");
    r
}

/// Raw Kafka requests over a blocking socket, for tests that need exact
/// control of what is sent.
pub mod raw {
    use bytes::Bytes;
    use ferry_protocol::frame::{concat, encode_request};
    use ferry_protocol::messages::*;
    use ferry_protocol::records::{NewRecord, RecordBatchBuilder};
    use ferry_protocol::wire::Message;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    /// Sends one request and returns the response body (after a v0 or v1
    /// response header, as the API and version call for).
    pub fn call(conn: &mut TcpStream, version: i16, body: RequestBody) -> Bytes {
        call_as(conn, "raw-test", version, body)
    }

    /// Sends one request and reads nothing (for a request the node is
    /// expected to answer by closing the connection).
    pub fn send_only(conn: &mut TcpStream, version: i16, body: RequestBody) {
        let frame = concat(&encode_request(7, Some("raw-test"), version, &body).unwrap());
        conn.write_all(&frame).unwrap();
    }

    /// [`call`] with a chosen `client.id` (which can carry a zone tag).
    pub fn call_as(
        conn: &mut TcpStream,
        client_id: &str,
        version: i16,
        body: RequestBody,
    ) -> Bytes {
        let api = body.api_key();
        let frame = concat(&encode_request(7, Some(client_id), version, &body).unwrap());
        conn.write_all(&frame).unwrap();
        let mut size = [0u8; 4];
        conn.read_exact(&mut size).unwrap();
        let mut resp = vec![0u8; u32::from_be_bytes(size) as usize];
        conn.read_exact(&mut resp).unwrap();
        let header = if ferry_protocol::frame::response_header_version(api, version) == 1 {
            5
        } else {
            4
        };
        Bytes::from(resp).slice(header..)
    }

    /// A raw connection: SaslHandshake v1, then SaslAuthenticate v2 with a
    /// PLAIN message. Returns SaslAuthenticate's error code and session
    /// lifetime.
    pub fn plain_login(k: &mut TcpStream, user: &str, password: &str) -> (i16, i64) {
        let body = RequestBody::SaslHandshake(sasl_handshake_request::SaslHandshakeRequest {
            mechanism: "PLAIN".into(),
            ..Default::default()
        });
        let r = call(k, 1, body);
        let h = sasl_handshake_response::SaslHandshakeResponse::decode(&r, 1).unwrap();
        assert_eq!(h.error_code, 0, "PLAIN is enabled");
        let body =
            RequestBody::SaslAuthenticate(sasl_authenticate_request::SaslAuthenticateRequest {
                auth_bytes: format!("\0{user}\0{password}").into_bytes().into(),
                ..Default::default()
            });
        let r = call(k, 2, body);
        let a = sasl_authenticate_response::SaslAuthenticateResponse::decode(&r, 2).unwrap();
        (a.error_code, a.session_lifetime_ms)
    }

    /// A simple consumer's OffsetCommit (v8, generation -1) of `offset` for
    /// partition 0 of each of `topics` in `group`: each topic's error code,
    /// sorted by topic.
    pub fn offset_commit_codes(
        conn: &mut TcpStream,
        group: &str,
        topics: &[&str],
        offset: i64,
    ) -> Vec<(String, i16)> {
        use offset_commit_request::*;
        let body = RequestBody::OffsetCommit(OffsetCommitRequest {
            group_id: group.into(),
            generation_id_or_member_epoch: -1,
            member_id: "".into(),
            topics: topics
                .iter()
                .map(|t| OffsetCommitRequestTopic {
                    name: (*t).into(),
                    partitions: vec![OffsetCommitRequestPartition {
                        partition_index: 0,
                        committed_offset: offset,
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
        let r = call(conn, 8, body);
        let r = offset_commit_response::OffsetCommitResponse::decode(&r, 8).unwrap();
        let mut codes: Vec<(String, i16)> = r
            .topics
            .iter()
            .map(|t| (t.name.to_string(), t.partitions[0].error_code))
            .collect();
        codes.sort();
        codes
    }

    /// Creates a topic; returns the error code.
    pub fn create_topic(
        conn: &mut TcpStream,
        name: &str,
        partitions: i32,
        configs: &[(&str, &str)],
    ) -> i16 {
        use create_topics_request::*;
        let body = RequestBody::CreateTopics(CreateTopicsRequest {
            topics: vec![CreatableTopic {
                name: name.into(),
                num_partitions: partitions,
                replication_factor: 1,
                configs: configs
                    .iter()
                    .map(|(k, v)| CreatableTopicConfig {
                        name: (*k).into(),
                        value: Some((*v).into()),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            timeout_ms: 10_000,
            ..Default::default()
        });
        let resp = call(conn, 7, body);
        create_topics_response::CreateTopicsResponse::decode(&resp, 7)
            .unwrap()
            .topics[0]
            .error_code
    }

    /// Produces one record (acks=all) with timestamp `ts`; returns the error
    /// code and base offset.
    pub fn produce(
        conn: &mut TcpStream,
        topic: &str,
        partition: i32,
        ts: i64,
        key: &[u8],
    ) -> (i16, i64) {
        let r = produce_at(conn, 9, topic, partition, ts, key);
        let p = &r.responses[0].partition_responses[0];
        (p.error_code, p.base_offset)
    }

    /// A Fetch (v11 fields) of one partition from `offset`, waiting up to
    /// `max_wait_ms` for at least one byte.
    pub fn fetch_request(
        topic: &str,
        partition: i32,
        offset: i64,
        max_wait_ms: i32,
    ) -> RequestBody {
        use fetch_request::*;
        RequestBody::Fetch(FetchRequest {
            replica_id: -1,
            max_wait_ms,
            min_bytes: 1,
            max_bytes: 1 << 20,
            session_epoch: -1,
            topics: vec![FetchTopic {
                topic: topic.into(),
                partitions: vec![FetchPartition {
                    partition,
                    current_leader_epoch: -1,
                    fetch_offset: offset,
                    last_fetched_epoch: -1,
                    log_start_offset: -1,
                    partition_max_bytes: 1 << 20,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        })
    }

    /// Fetches (v11) one partition from `offset`, up to 1 MiB, waiting at
    /// most 100 ms; returns the error code and the (offset, key) of every
    /// record in the response.
    pub fn fetch(
        conn: &mut TcpStream,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> (i16, Vec<(i64, Vec<u8>)>) {
        let body = fetch_request(topic, partition, offset, 100);
        let resp = call(conn, 11, body);
        let r = fetch_response::FetchResponse::decode(&resp, 11).unwrap();
        let p = &r.responses[0].partitions[0];
        let mut out = Vec::new();
        if let Some(set) = &p.records {
            for batch in ferry_protocol::records::RecordBatches::new(set.to_bytes()) {
                let batch = batch.unwrap();
                let base = batch.base_offset();
                for rec in batch.records().unwrap() {
                    let rec = rec.unwrap();
                    out.push((
                        base + i64::from(rec.offset_delta()),
                        rec.key().unwrap_or_default().to_vec(),
                    ));
                }
            }
        }
        (p.error_code, out)
    }

    /// Produces one record (acks=all) at produce `version`; returns the
    /// whole response.
    pub fn produce_response(
        conn: &mut TcpStream,
        version: i16,
        topic: &str,
        partition: i32,
        key: &[u8],
    ) -> produce_response::ProduceResponse {
        produce_at(conn, version, topic, partition, 1_000, key)
    }

    fn produce_at(
        conn: &mut TcpStream,
        version: i16,
        topic: &str,
        partition: i32,
        ts: i64,
        key: &[u8],
    ) -> produce_response::ProduceResponse {
        produce_as(conn, version, topic, partition, ts, key, None)
    }

    /// [`produce_at`], as an idempotent producer when `producer` is given
    /// (id, epoch, sequence).
    fn produce_as(
        conn: &mut TcpStream,
        version: i16,
        topic: &str,
        partition: i32,
        ts: i64,
        key: &[u8],
        producer: Option<(i64, i16, i32)>,
    ) -> produce_response::ProduceResponse {
        let mut b = RecordBatchBuilder::new();
        if let Some((id, epoch, sequence)) = producer {
            b = b.producer(id, epoch, sequence);
        }
        b.push(NewRecord::new(ts, Some(key), Some(b"v")));
        let body = RequestBody::Produce(produce_request::ProduceRequest {
            acks: -1,
            timeout_ms: 10_000,
            topic_data: vec![produce_request::TopicProduceData {
                name: topic.into(),
                partition_data: vec![produce_request::PartitionProduceData {
                    index: partition,
                    records: Some(b.build().unwrap().into()),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        });
        let resp = call(conn, version, body);
        produce_response::ProduceResponse::decode(&resp, version).unwrap()
    }

    /// Produces one record as an idempotent producer (`producer_id`,
    /// `epoch`, first sequence `sequence`); returns the error code.
    pub fn produce_idempotent(
        conn: &mut TcpStream,
        topic: &str,
        partition: i32,
        producer: (i64, i16, i32),
    ) -> i16 {
        let r = produce_as(conn, 9, topic, partition, 1_000, b"k", Some(producer));
        r.responses[0].partition_responses[0].error_code
    }

    /// InitProducerId (v4) naming `producer_id` and `epoch` (-1: none);
    /// returns the id and epoch given.
    pub fn init_producer_id(conn: &mut TcpStream, producer_id: i64, epoch: i16) -> (i64, i16) {
        let (code, id, epoch) = init_producer_id_answer(conn, producer_id, epoch);
        assert_eq!(code, 0);
        (id, epoch)
    }

    /// InitProducerId (v4): the error code, id and epoch.
    pub fn init_producer_id_answer(
        conn: &mut TcpStream,
        producer_id: i64,
        epoch: i16,
    ) -> (i16, i64, i16) {
        let body = RequestBody::InitProducerId(init_producer_id_request::InitProducerIdRequest {
            transactional_id: None,
            transaction_timeout_ms: 60_000,
            producer_id,
            producer_epoch: epoch,
            ..Default::default()
        });
        let r = call(conn, 4, body);
        let r = init_producer_id_response::InitProducerIdResponse::decode(&r, 4).unwrap();
        (r.error_code, r.producer_id, r.producer_epoch)
    }

    /// ListOffsets for one partition: -2 earliest, -1 latest.
    pub fn list_offset(conn: &mut TcpStream, topic: &str, partition: i32, ts: i64) -> i64 {
        list_offset_answer(conn, topic, partition, ts).1
    }

    /// ListOffsets for one partition: the error code and the offset.
    pub fn list_offset_answer(
        conn: &mut TcpStream,
        topic: &str,
        partition: i32,
        ts: i64,
    ) -> (i16, i64) {
        use list_offsets_request::*;
        let body = RequestBody::ListOffsets(ListOffsetsRequest {
            replica_id: -1,
            topics: vec![ListOffsetsTopic {
                name: topic.into(),
                partitions: vec![ListOffsetsPartition {
                    partition_index: partition,
                    timestamp: ts,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        });
        let resp = call(conn, 7, body);
        let r = list_offsets_response::ListOffsetsResponse::decode(&resp, 7).unwrap();
        let p = &r.topics[0].partitions[0];
        (p.error_code, p.offset)
    }
}
