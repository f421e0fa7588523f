//! Ferry's node-to-node RPCs, over the ordinary Kafka listener.
//!
//! Nodes talk to each other with Kafka's framing: a big-endian `i32` size,
//! then a request header `api_key: i16, api_version: i16, correlation_id:
//! i32` (no client id, no tagged fields), then the payload; a response is
//! the size, `correlation_id: i32`, and the payload. The API keys from
//! [`RPC_API_KEY_MIN`] up are Ferry's own; clients never send them, and
//! [`crate::broker::conn`] hands any frame that carries one to [`spawn_call`]
//! instead of the Kafka decoder.
//!
//! | key | request | response | what for |
//! | --- | --- | --- | --- |
//! | [`HANDOFF_COMMIT`] | [`HandoffCommit`] | [`HandoffCommitResponse`] | a proxy asks a leader to assign offsets to batches it wrote into a handoff object |
//! | [`REPLICA_READ`] | [`ReplicaRead`] | [`ReplicaReadResponse`] | a read replica follows a leader's commit stream (metadata only) |
//! | [`FORWARD`] | [`Forward`] | [`ForwardResponse`] | a whole client request, handled by another node as if the client had sent it |
//!
//! Every payload is version 0. Integers are big-endian and fixed width;
//! strings are a `u16` length and UTF-8 (at most [`STRING_BYTES_MAX`]
//! bytes); arrays are a `u32` count, refused when the count could not fit in
//! the bytes left. Object keys are sent once per message in a key table and
//! batches refer to them by index, so a handoff costs 50 bytes per batch on
//! the wire plus each distinct key once. A decoder refuses truncated input,
//! trailing bytes, impossible counts, oversized strings and bad key indices
//! with an [`RpcError`]; it never panics and allocates at most a small
//! multiple of its input.
//!
//! The server side is [`RpcHandler`], one method per message, shard-local
//! (its futures are not `Send`), and [`decode_call`] / [`serve_call`] (or
//! [`serve_frame`] for both). The client side is [`RpcClient`], one per
//! shard: one connection per peer node, many calls in flight on it matched
//! by correlation id, a timeout on every call, and every pending call failed
//! at once (with a retriable error) when the connection breaks. Bytes sent
//! and received are counted per peer zone and kind in a node-wide
//! [`RpcTraffic`], rendered as `ferry_zone_bytes_total`.
//!
//! The files: this one has the constants, the errors and the messages;
//! `codec` the primitives, the message traits and frames; `server` the
//! handler side; `client` the connections and calls; `traffic` the byte
//! counts. (The messages are still written by hand, not generated from
//! JSON schemas as Kafka's are.)

use crate::cluster::Member;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use ferry_protocol::error_code::ErrorCode;
use ferry_protocol::frame::FrameReader;
use futures_channel::oneshot;
use futures_lite::{AsyncReadExt, AsyncWriteExt, StreamExt};
use futures_util::future::AbortHandle;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpStream;
use parking_lot::Mutex;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod client;
mod codec;
mod server;
mod traffic;

pub use client::*;
pub use codec::*;
pub use server::*;
pub use traffic::*;

/// The lowest of Ferry's private API keys.
pub const RPC_API_KEY_MIN: i16 = 32000;
/// [`HandoffCommit`].
pub const HANDOFF_COMMIT: i16 = 32000;
/// [`ReplicaRead`].
pub const REPLICA_READ: i16 = 32001;
/// [`Forward`].
pub const FORWARD: i16 = 32002;
/// The only payload version so far.
pub const RPC_VERSION: i16 = 0;
/// Longest string in a message (topic, object key, host): S3's key limit.
pub const STRING_BYTES_MAX: usize = 1024;
/// Most distinct object keys in one message.
pub const KEYS_MAX: usize = 65_536;
/// Bytes of a request header: api key, version, correlation id.
pub const REQUEST_HEADER_BYTES: usize = 8;
/// Bytes of a response header: the correlation id.
pub const RESPONSE_HEADER_BYTES: usize = 4;
/// `Bytes` fields at least this long are sent as their own segment rather
/// than copied into the message buffer.
const ZERO_COPY_BYTES_MIN: usize = 4096;

/// What can go wrong with an RPC: a message that does not decode, or a
/// peer that cannot be reached or does not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    #[error("{what}: needs {need} bytes, {have} left")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("{bytes} bytes left over after the message")]
    Trailing { bytes: usize },
    #[error("{what}: a count of {count} cannot fit in the {remaining} bytes left")]
    Count {
        what: &'static str,
        count: u64,
        remaining: usize,
    },
    #[error("{what}: {count} is more than the {max} allowed")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
    #[error("{what}: a string of {len} bytes exceeds the limit of {max} bytes")]
    StringTooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{what}: not UTF-8")]
    NotUtf8 { what: &'static str },
    #[error("{what}: key index {index} is outside a key table of {keys}")]
    KeyIndex {
        what: &'static str,
        index: u32,
        keys: usize,
    },
    #[error("{what}: bad length {len}")]
    Length { what: &'static str, len: i64 },
    #[error("RPC frame of {len} bytes is too short for a header")]
    ShortFrame { len: usize },
    #[error("unknown RPC API key {api_key}")]
    UnknownApi { api_key: i16 },
    #[error("RPC API key {api_key} version {version} is not supported")]
    UnsupportedVersion { api_key: i16, version: i16 },
    #[error("cannot reach node {node_id} at {addr}: {reason}")]
    Connect {
        node_id: i32,
        addr: String,
        reason: String,
    },
    #[error("connection to node {node_id} lost: {reason}")]
    ConnectionLost { node_id: i32, reason: String },
    #[error("node {node_id} did not answer within {after:?}")]
    Timeout { node_id: i32, after: Duration },
}

impl RpcError {
    /// Whether the same call may succeed if tried again (on a new
    /// connection, or later): the peer was unreachable, went away, or was
    /// slow. A message that does not decode is not retriable.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            RpcError::Connect { .. } | RpcError::ConnectionLost { .. } | RpcError::Timeout { .. }
        )
    }

    /// The Kafka error a proxy gives its client for this failure. It must
    /// not claim "not written" when the leader may have written: librdkafka
    /// takes NOT_LEADER_OR_FOLLOWER as "not persisted" and may then give
    /// the same records a new producer epoch and sequence, which writes
    /// them twice. So a call that was sent and got no answer (a timeout, a
    /// connection lost under it) is REQUEST_TIMED_OUT, "possibly
    /// persisted", retried with the same sequence; a leader that could not
    /// be reached at all is NOT_LEADER_OR_FOLLOWER (the client refreshes
    /// its metadata); anything else UNKNOWN_SERVER_ERROR.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            RpcError::Timeout { .. } | RpcError::ConnectionLost { .. } => {
                ErrorCode::REQUEST_TIMED_OUT
            }
            RpcError::Connect { .. } => ErrorCode::NOT_LEADER_OR_FOLLOWER,
            _ => ErrorCode::UNKNOWN_SERVER_ERROR,
        }
    }
}

// ---------------------------------------------------------------------------
// The messages.
// ---------------------------------------------------------------------------

/// A proxy asks a leader to assign offsets to batches it has written into
/// handoff objects, which are durable in the bucket already.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoffCommit {
    pub from_node: i32,
    /// The cluster view the proxy routed by.
    pub view_revision: u64,
    pub partitions: Vec<HandoffPartition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoffPartition {
    pub topic: Arc<str>,
    pub topic_id: [u8; 16],
    pub partition: i32,
    pub batches: Vec<HandoffBatch>,
}

/// One record batch in a handoff object, with the header fields the leader
/// needs to check and place it without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoffBatch {
    /// The handoff object's key.
    pub key: Arc<str>,
    /// Where the batch starts in the object, and its length.
    pub position: u64,
    pub len: u32,
    /// The batch's CRC32C, as in its header.
    pub crc: u32,
    pub record_count: i32,
    pub last_offset_delta: i32,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

/// Fixed bytes of a [`HandoffBatch`] on the wire (the key is an index).
pub const HANDOFF_BATCH_BYTES: usize = 4 + 8 + 4 + 4 + 4 + 4 + 8 + 8 + 2 + 4;
const HANDOFF_PARTITION_BYTES_MIN: usize = 2 + 16 + 4 + 4;

impl RpcMessage for HandoffCommit {
    fn encode(&self, w: &mut Writer) -> Result<(), RpcError> {
        w.i32(self.from_node);
        w.u64(self.view_revision);
        let mut keys = KeyTable::new();
        for p in &self.partitions {
            for b in &p.batches {
                keys.add(&b.key)?;
            }
        }
        keys.encode(w)?;
        w.count(self.partitions.len(), "handoff partitions")?;
        for p in &self.partitions {
            w.string(&p.topic, "topic")?;
            w.array16(&p.topic_id);
            w.i32(p.partition);
            w.count(p.batches.len(), "handoff batches")?;
            for b in &p.batches {
                w.u32(keys.get(&b.key));
                w.u64(b.position);
                w.u32(b.len);
                w.u32(b.crc);
                w.i32(b.record_count);
                w.i32(b.last_offset_delta);
                w.i64(b.max_timestamp);
                w.i64(b.producer_id);
                w.i16(b.producer_epoch);
                w.i32(b.base_sequence);
            }
        }
        Ok(())
    }

    fn decode(r: &mut Reader) -> Result<Self, RpcError> {
        let from_node = r.i32("from_node")?;
        let view_revision = r.u64("view_revision")?;
        let keys = KeyTable::decode(r)?;
        let n = r.count("handoff partitions", HANDOFF_PARTITION_BYTES_MIN)?;
        let mut partitions = Vec::with_capacity(n);
        for _ in 0..n {
            let topic = r.string("topic")?;
            let topic_id = r.array16("topic_id")?;
            let partition = r.i32("partition")?;
            let nb = r.count("handoff batches", HANDOFF_BATCH_BYTES)?;
            let mut batches = Vec::with_capacity(nb);
            for _ in 0..nb {
                batches.push(HandoffBatch {
                    key: key_at(&keys, r, "handoff batch key")?,
                    position: r.u64("position")?,
                    len: r.u32("len")?,
                    crc: r.u32("crc")?,
                    record_count: r.i32("record_count")?,
                    last_offset_delta: r.i32("last_offset_delta")?,
                    max_timestamp: r.i64("max_timestamp")?,
                    producer_id: r.i64("producer_id")?,
                    producer_epoch: r.i16("producer_epoch")?,
                    base_sequence: r.i32("base_sequence")?,
                });
            }
            partitions.push(HandoffPartition {
                topic,
                topic_id,
                partition,
                batches,
            });
        }
        Ok(HandoffCommit {
            from_node,
            view_revision,
            partitions,
        })
    }
}

impl RpcRequest for HandoffCommit {
    const API_KEY: i16 = HANDOFF_COMMIT;
    const KIND: RpcKind = RpcKind::Handoff;
    type Response = HandoffCommitResponse;
}

/// The leader's answer, per partition and batch in the request's order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HandoffCommitResponse {
    pub partitions: Vec<Vec<BatchResult>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchResult {
    pub error_code: i16,
    pub base_offset: i64,
    pub log_start: i64,
}

const BATCH_RESULT_BYTES: usize = 2 + 8 + 8;

impl HandoffCommitResponse {
    /// Every batch of `req` answered with `error`.
    pub fn all(req: &HandoffCommit, error: ErrorCode) -> HandoffCommitResponse {
        HandoffCommitResponse {
            partitions: req
                .partitions
                .iter()
                .map(|p| {
                    p.batches
                        .iter()
                        .map(|_| BatchResult {
                            error_code: error.code(),
                            base_offset: -1,
                            log_start: -1,
                        })
                        .collect()
                })
                .collect(),
        }
    }
}

impl RpcMessage for HandoffCommitResponse {
    fn encode(&self, w: &mut Writer) -> Result<(), RpcError> {
        w.count(self.partitions.len(), "partition results")?;
        for p in &self.partitions {
            w.count(p.len(), "batch results")?;
            for b in p {
                w.i16(b.error_code);
                w.i64(b.base_offset);
                w.i64(b.log_start);
            }
        }
        Ok(())
    }

    fn decode(r: &mut Reader) -> Result<Self, RpcError> {
        let n = r.count("partition results", 4)?;
        let mut partitions = Vec::with_capacity(n);
        for _ in 0..n {
            let nb = r.count("batch results", BATCH_RESULT_BYTES)?;
            let mut batches = Vec::with_capacity(nb);
            for _ in 0..nb {
                batches.push(BatchResult {
                    error_code: r.i16("error_code")?,
                    base_offset: r.i64("base_offset")?,
                    log_start: r.i64("log_start")?,
                });
            }
            partitions.push(batches);
        }
        Ok(HandoffCommitResponse { partitions })
    }
}

/// A read replica asks the leader what it has committed from
/// `from_offset` on (metadata only: the replica reads the bytes from the
/// bucket). The leader may wait up to `max_wait_ms` for new data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRead {
    pub topic: Arc<str>,
    pub partition: i32,
    pub from_offset: i64,
    pub max_bytes: i32,
    pub max_wait_ms: i32,
}

impl RpcMessage for ReplicaRead {
    fn encode(&self, w: &mut Writer) -> Result<(), RpcError> {
        w.string(&self.topic, "topic")?;
        w.i32(self.partition);
        w.i64(self.from_offset);
        w.i32(self.max_bytes);
        w.i32(self.max_wait_ms);
        Ok(())
    }

    fn decode(r: &mut Reader) -> Result<Self, RpcError> {
        Ok(ReplicaRead {
            topic: r.string("topic")?,
            partition: r.i32("partition")?,
            from_offset: r.i64("from_offset")?,
            max_bytes: r.i32("max_bytes")?,
            max_wait_ms: r.i32("max_wait_ms")?,
        })
    }
}

impl RpcRequest for ReplicaRead {
    const API_KEY: i16 = REPLICA_READ;
    const KIND: RpcKind = RpcKind::Replica;
    type Response = ReplicaReadResponse;
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplicaReadResponse {
    pub error_code: i16,
    pub high_watermark: i64,
    pub log_start: i64,
    pub leader_epoch: i32,
    pub entries: Vec<ReplicaEntry>,
}

impl ReplicaReadResponse {
    /// An answer with `error` and nothing else.
    pub fn error(error: ErrorCode) -> ReplicaReadResponse {
        ReplicaReadResponse {
            error_code: error.code(),
            high_watermark: -1,
            log_start: -1,
            leader_epoch: -1,
            entries: Vec::new(),
        }
    }
}

/// Where a committed batch lives: object key, byte range and CRC32C.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaEntry {
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    pub key: Arc<str>,
    pub position: u64,
    pub len: u32,
    pub crc: u32,
}

const REPLICA_ENTRY_BYTES: usize = 8 + 8 + 8 + 4 + 8 + 4 + 4;

impl RpcMessage for ReplicaReadResponse {
    fn encode(&self, w: &mut Writer) -> Result<(), RpcError> {
        w.i16(self.error_code);
        w.i64(self.high_watermark);
        w.i64(self.log_start);
        w.i32(self.leader_epoch);
        let mut keys = KeyTable::new();
        for e in &self.entries {
            keys.add(&e.key)?;
        }
        keys.encode(w)?;
        w.count(self.entries.len(), "replica entries")?;
        for e in &self.entries {
            w.i64(e.base_offset);
            w.i64(e.last_offset);
            w.i64(e.max_timestamp);
            w.u32(keys.get(&e.key));
            w.u64(e.position);
            w.u32(e.len);
            w.u32(e.crc);
        }
        Ok(())
    }

    fn decode(r: &mut Reader) -> Result<Self, RpcError> {
        let error_code = r.i16("error_code")?;
        let high_watermark = r.i64("high_watermark")?;
        let log_start = r.i64("log_start")?;
        let leader_epoch = r.i32("leader_epoch")?;
        let keys = KeyTable::decode(r)?;
        let n = r.count("replica entries", REPLICA_ENTRY_BYTES)?;
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            entries.push(ReplicaEntry {
                base_offset: r.i64("base_offset")?,
                last_offset: r.i64("last_offset")?,
                max_timestamp: r.i64("max_timestamp")?,
                key: key_at(&keys, r, "replica entry key")?,
                position: r.u64("position")?,
                len: r.u32("len")?,
                crc: r.u32("crc")?,
            });
        }
        Ok(ReplicaReadResponse {
            error_code,
            high_watermark,
            log_start,
            leader_epoch,
            entries,
        })
    }
}

/// A client's whole Kafka request frame (without its size prefix), for the
/// receiving node to handle as if the client at `client_host` had sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub client_host: Arc<str>,
    pub frame: Bytes,
}

impl RpcMessage for Forward {
    fn encode(&self, w: &mut Writer) -> Result<(), RpcError> {
        w.string(&self.client_host, "client_host")?;
        let len = i32::try_from(self.frame.len()).map_err(|_| RpcError::TooMany {
            what: "forwarded frame bytes",
            count: self.frame.len(),
            max: i32::MAX as usize,
        })?;
        w.i32(len);
        w.bytes(&self.frame);
        Ok(())
    }

    fn decode(r: &mut Reader) -> Result<Self, RpcError> {
        let client_host = r.string("client_host")?;
        let len = r.i32("forwarded frame length")?;
        let n = usize::try_from(len).map_err(|_| RpcError::Length {
            what: "forwarded frame",
            len: len.into(),
        })?;
        let frame = r.bytes(n, "forwarded frame")?;
        Ok(Forward { client_host, frame })
    }
}

impl RpcRequest for Forward {
    const API_KEY: i16 = FORWARD;
    const KIND: RpcKind = RpcKind::Forward;
    type Response = ForwardResponse;
}

/// The receiving node's answer to a forwarded request: the whole encoded
/// response frame (without its size prefix), or `None` when the request
/// gets no response (acks=0). `error_code` is not 0 when the receiver
/// could not handle the request at all; the frame is then `None`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ForwardResponse {
    pub error_code: i16,
    pub frame: Option<Bytes>,
}

impl RpcMessage for ForwardResponse {
    fn encode(&self, w: &mut Writer) -> Result<(), RpcError> {
        w.i16(self.error_code);
        match &self.frame {
            None => w.i32(-1),
            Some(f) => {
                let len = i32::try_from(f.len()).map_err(|_| RpcError::TooMany {
                    what: "response frame bytes",
                    count: f.len(),
                    max: i32::MAX as usize,
                })?;
                w.i32(len);
                w.bytes(f);
            }
        }
        Ok(())
    }

    fn decode(r: &mut Reader) -> Result<Self, RpcError> {
        let error_code = r.i16("error_code")?;
        let len = r.i32("response frame length")?;
        let frame = match len {
            -1 => None,
            n if n < 0 => {
                return Err(RpcError::Length {
                    what: "response frame",
                    len: n.into(),
                })
            }
            n => Some(r.bytes(n as usize, "response frame")?),
        };
        Ok(ForwardResponse { error_code, frame })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    /// Random choices read from a sequence proptest generates: a failing
    /// case shrinks (toward fewer and smaller draws: shorter, simpler
    /// messages) and is kept in `proptest-regressions/`. Past the end of
    /// the sequence every draw is 0.
    struct Rng {
        draws: Vec<u64>,
        at: usize,
    }

    /// The choices of one case.
    fn draws() -> impl Strategy<Value = Vec<u64>> {
        proptest::collection::vec(any::<u64>(), 0..400)
    }

    impl Rng {
        fn new(draws: Vec<u64>) -> Rng {
            Rng { draws, at: 0 }
        }

        fn next(&mut self) -> u64 {
            let v = self.draws.get(self.at).copied().unwrap_or(0);
            self.at += 1;
            v
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }

        fn string(&mut self, max: usize) -> Arc<str> {
            let len = self.below(max as u64 + 1) as usize;
            // Some multi-byte characters too.
            (0..len)
                .map(|i| {
                    if i % 7 == 3 {
                        'é'
                    } else {
                        (b'a' + (self.below(26) as u8)) as char
                    }
                })
                .collect::<String>()
                .into()
        }
    }

    fn handoff(rng: &mut Rng) -> HandoffCommit {
        let keys: Vec<Arc<str>> = (0..1 + rng.below(3)).map(|_| rng.string(60)).collect();
        HandoffCommit {
            from_node: rng.next() as i32,
            view_revision: rng.next(),
            partitions: (0..rng.below(4))
                .map(|_| HandoffPartition {
                    topic: rng.string(40),
                    topic_id: (rng.next() as u128 * 31).to_be_bytes(),
                    partition: rng.next() as i32,
                    batches: (0..rng.below(5))
                        .map(|_| HandoffBatch {
                            key: keys[rng.below(keys.len() as u64) as usize].clone(),
                            position: rng.next(),
                            len: rng.next() as u32,
                            crc: rng.next() as u32,
                            record_count: rng.next() as i32,
                            last_offset_delta: rng.next() as i32,
                            max_timestamp: rng.next() as i64,
                            producer_id: rng.next() as i64,
                            producer_epoch: rng.next() as i16,
                            base_sequence: rng.next() as i32,
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    fn handoff_response(rng: &mut Rng) -> HandoffCommitResponse {
        HandoffCommitResponse {
            partitions: (0..rng.below(4))
                .map(|_| {
                    (0..rng.below(5))
                        .map(|_| BatchResult {
                            error_code: rng.next() as i16,
                            base_offset: rng.next() as i64,
                            log_start: rng.next() as i64,
                        })
                        .collect()
                })
                .collect(),
        }
    }

    fn replica_read(rng: &mut Rng) -> ReplicaRead {
        ReplicaRead {
            topic: rng.string(100),
            partition: rng.next() as i32,
            from_offset: rng.next() as i64,
            max_bytes: rng.next() as i32,
            max_wait_ms: rng.next() as i32,
        }
    }

    fn replica_response(rng: &mut Rng) -> ReplicaReadResponse {
        let keys: Vec<Arc<str>> = (0..1 + rng.below(3)).map(|_| rng.string(60)).collect();
        ReplicaReadResponse {
            error_code: rng.next() as i16,
            high_watermark: rng.next() as i64,
            log_start: rng.next() as i64,
            leader_epoch: rng.next() as i32,
            entries: (0..rng.below(6))
                .map(|_| ReplicaEntry {
                    base_offset: rng.next() as i64,
                    last_offset: rng.next() as i64,
                    max_timestamp: rng.next() as i64,
                    key: keys[rng.below(keys.len() as u64) as usize].clone(),
                    position: rng.next(),
                    len: rng.next() as u32,
                    crc: rng.next() as u32,
                })
                .collect(),
        }
    }

    fn bytes(rng: &mut Rng, max: usize) -> Bytes {
        // Sometimes over the zero-copy threshold, so segments are tested.
        let len = if rng.below(4) == 0 {
            ZERO_COPY_BYTES_MIN + rng.below(100) as usize
        } else {
            rng.below(max as u64 + 1) as usize
        };
        (0..len)
            .map(|_| rng.next() as u8)
            .collect::<Vec<u8>>()
            .into()
    }

    fn forward(rng: &mut Rng) -> Forward {
        Forward {
            client_host: rng.string(40),
            frame: bytes(rng, 64),
        }
    }

    fn forward_response(rng: &mut Rng) -> ForwardResponse {
        ForwardResponse {
            error_code: rng.next() as i16,
            frame: (rng.below(3) != 0).then(|| bytes(rng, 64)),
        }
    }

    /// Round trip, then every strict prefix refused, then trailing bytes
    /// refused.
    fn check<M: RpcMessage + PartialEq + std::fmt::Debug>(m: &M) {
        let enc = encode_to_bytes(m).expect("encode");
        let back: M = decode_exact(enc.clone()).expect("decode");
        assert_eq!(&back, m);
        for cut in 0..enc.len() {
            assert!(
                decode_exact::<M>(enc.slice(..cut)).is_err(),
                "a message cut to {cut} of {} bytes decoded",
                enc.len()
            );
        }
        let mut longer = BytesMut::from(&enc[..]);
        longer.put_u8(0);
        assert_eq!(
            decode_exact::<M>(longer.freeze()),
            Err(RpcError::Trailing { bytes: 1 })
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn every_message_round_trips_and_refuses_every_truncation(d in draws()) {
            let mut rng = Rng::new(d);
            check(&handoff(&mut rng));
            check(&handoff_response(&mut rng));
            check(&replica_read(&mut rng));
            check(&replica_response(&mut rng));
            check(&forward(&mut rng));
            check(&forward_response(&mut rng));
        }

        #[test]
        fn request_frames_decode_as_calls_with_every_truncation_refused(
            d in draws(),
            i in 0i32..3,
        ) {
            request_frame_case(Rng::new(d), i);
        }

        /// Mutating single bytes of valid messages (mostly lengths and
        /// counts) is refused or decodes, never panics.
        #[test]
        fn mutated_messages_never_panic(d in draws(), edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..20)) {
            let mut rng = Rng::new(d);
            let m = handoff(&mut rng);
            let enc = encode_to_bytes(&m).expect("encode");
            if !enc.is_empty() {
                for (at, byte) in edits {
                    let mut v = enc.to_vec();
                    let at = at % v.len();
                    v[at] = byte;
                    let _ = decode_exact::<HandoffCommit>(Bytes::from(v));
                }
            }
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        // Bytes and a choice of header, from proptest.
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: 5000,
            ..ProptestConfig::default()
        });
        runner
            .run(
                &(proptest::collection::vec(any::<u8>(), 0..200), 0u32..8),
                |(mut v, i)| {
                    // Half the time a valid header, so the payload decoders run.
                    if i < 4 && v.len() >= 8 {
                        let key = RPC_API_KEY_MIN + i as i16;
                        v[..2].copy_from_slice(&key.to_be_bytes());
                        v[2..4].copy_from_slice(&0i16.to_be_bytes());
                    }
                    let b = Bytes::from(v);
                    let _ = decode_call(&b);
                    let _ = decode_exact::<HandoffCommit>(b.clone());
                    let _ = decode_exact::<HandoffCommitResponse>(b.clone());
                    let _ = decode_exact::<ReplicaReadResponse>(b.clone());
                    let _ = decode_exact::<ForwardResponse>(b.clone());
                    let _ = decode_exact::<ReplicaRead>(b);
                    Ok(())
                },
            )
            .unwrap();
    }

    fn request_frame_case(mut rng: Rng, i: i32) {
        {
            let body = match i % 3 {
                0 => RpcBody::HandoffCommit(handoff(&mut rng)),
                1 => RpcBody::ReplicaRead(replica_read(&mut rng)),
                _ => RpcBody::Forward(forward(&mut rng)),
            };
            let segs = match &body {
                RpcBody::HandoffCommit(m) => encode_request_frame(i, m),
                RpcBody::ReplicaRead(m) => encode_request_frame(i, m),
                RpcBody::Forward(m) => encode_request_frame(i, m),
            }
            .expect("encode");
            let whole = ferry_protocol::frame::concat(&segs);
            let size = i32::from_be_bytes([whole[0], whole[1], whole[2], whole[3]]);
            assert_eq!(size as usize, whole.len() - 4);
            let frame = whole.slice(4..);
            assert!(is_rpc_frame(&frame));
            let call = decode_call(&frame).expect("decode");
            assert_eq!(call.correlation_id, i);
            assert_eq!(call.body, body);
            for cut in 0..frame.len() {
                assert!(decode_call(&frame.slice(..cut)).is_err(), "cut at {cut}");
            }
        }
    }

    #[test]
    fn hostile_counts_and_strings_are_refused() {
        // A key table claiming 4 billion keys in 8 bytes.
        let mut w = Writer::new();
        w.i32(1);
        w.u64(1);
        w.u32(u32::MAX);
        w.u64(0);
        let b = Bytes::from(w.into_segments().concat());
        assert!(matches!(
            decode_exact::<HandoffCommit>(b),
            Err(RpcError::Count { .. })
        ));
        // A string over the bound.
        let mut w = Writer::new();
        w.u16(STRING_BYTES_MAX as u16 + 1);
        w.bytes(&Bytes::from(vec![b'a'; STRING_BYTES_MAX + 1]));
        w.i32(0);
        w.i64(0);
        w.i32(0);
        w.i32(0);
        let b = Bytes::from(w.into_segments().concat());
        assert!(matches!(
            decode_exact::<ReplicaRead>(b),
            Err(RpcError::StringTooLong { .. })
        ));
        // And the encoder refuses to write one.
        let long: Arc<str> = "t".repeat(STRING_BYTES_MAX + 1).into();
        let r = ReplicaRead {
            topic: long,
            partition: 0,
            from_offset: 0,
            max_bytes: 0,
            max_wait_ms: 0,
        };
        assert!(matches!(
            encode_to_bytes(&r),
            Err(RpcError::StringTooLong { .. })
        ));
        // Not UTF-8.
        let b = Bytes::from_static(&[
            0, 2, 0xff, 0xfe, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ]);
        assert_eq!(
            decode_exact::<ReplicaRead>(b),
            Err(RpcError::NotUtf8 { what: "topic" })
        );
        // A key index outside the table.
        let m = HandoffCommit {
            from_node: 1,
            view_revision: 2,
            partitions: vec![HandoffPartition {
                topic: "t".into(),
                topic_id: [0; 16],
                partition: 0,
                batches: vec![batch("k")],
            }],
        };
        let mut v = encode_to_bytes(&m).expect("encode").to_vec();
        // from_node 4, revision 8, key count 4, key 2+1, partitions 4,
        // topic 2+1, id 16, partition 4, batches 4: the key index follows.
        let at = 4 + 8 + 4 + 3 + 4 + 3 + 16 + 4 + 4;
        v[at..at + 4].copy_from_slice(&1u32.to_be_bytes());
        assert!(matches!(
            decode_exact::<HandoffCommit>(Bytes::from(v)),
            Err(RpcError::KeyIndex { index: 1, .. })
        ));
        // Negative forwarded frame lengths.
        let b = Bytes::from_static(&[0, 0, 0xff, 0xff, 0xff, 0xfe]);
        assert!(matches!(
            decode_exact::<Forward>(b),
            Err(RpcError::Length { .. })
        ));
        let b = Bytes::from_static(&[0, 0, 0xff, 0xff, 0xff, 0xfe]);
        assert!(matches!(
            decode_exact::<ForwardResponse>(b),
            Err(RpcError::Length { .. })
        ));
    }

    #[test]
    fn unknown_keys_and_versions_are_refused() {
        let frame = |key: i16, version: i16| {
            let mut b = BytesMut::new();
            b.put_i16(key);
            b.put_i16(version);
            b.put_i32(7);
            b.freeze()
        };
        assert_eq!(
            decode_call(&frame(32003, 0)),
            Err(RpcError::UnknownApi { api_key: 32003 })
        );
        assert_eq!(
            decode_call(&frame(32639, 0)),
            Err(RpcError::UnknownApi { api_key: 32639 })
        );
        assert_eq!(
            decode_call(&frame(FORWARD, 1)),
            Err(RpcError::UnsupportedVersion {
                api_key: FORWARD,
                version: 1
            })
        );
        assert_eq!(
            decode_call(&Bytes::from_static(&[0x7d, 0])),
            Err(RpcError::ShortFrame { len: 2 })
        );
        assert!(!is_rpc_frame(&frame(0, 0)));
        assert!(!is_rpc_frame(&frame(-1, 0)));
        assert!(!is_rpc_frame(&[0x7d]));
        assert!(is_rpc_frame(&frame(32000, 0)));
    }

    fn batch(key: &str) -> HandoffBatch {
        HandoffBatch {
            key: key.into(),
            position: 1 << 20,
            len: 16 << 10,
            crc: 0xdead_beef,
            record_count: 100,
            last_offset_delta: 99,
            max_timestamp: 1_700_000_000_000,
            producer_id: 1234,
            producer_epoch: 0,
            base_sequence: 5000,
        }
    }

    /// Only a few dozen bytes per batch cross zones: under 100 even when
    /// every batch is in a different object with a 40-byte key, and about
    /// 50 when they share one.
    #[test]
    fn a_handoff_costs_few_bytes_per_batch() {
        let key40 = |i: usize| format!("handoff/zone-a/node-7/{i:018}");
        assert_eq!(key40(0).len(), 40);
        let partitions = |distinct_keys: bool| {
            (0..10)
                .map(|p| HandoffPartition {
                    topic: "orders".into(),
                    topic_id: [7; 16],
                    partition: p,
                    batches: (0..10)
                        .map(|b| {
                            let k = if distinct_keys {
                                key40(p as usize * 10 + b)
                            } else {
                                key40(0)
                            };
                            batch(&k)
                        })
                        .collect(),
                })
                .collect::<Vec<_>>()
        };
        for distinct in [true, false] {
            let m = HandoffCommit {
                from_node: 3,
                view_revision: 17,
                partitions: partitions(distinct),
            };
            let frame: usize = encode_request_frame(1, &m)
                .expect("encode")
                .iter()
                .map(Bytes::len)
                .sum();
            let per_batch = frame as f64 / 100.0;
            assert!(per_batch < 100.0, "{per_batch} bytes per batch");
            if !distinct {
                assert!(per_batch < 60.0, "{per_batch} bytes per batch, one key");
            }
        }
        let resp = HandoffCommitResponse::all(
            &HandoffCommit {
                from_node: 0,
                view_revision: 0,
                partitions: partitions(false),
            },
            ErrorCode::NONE,
        );
        let n = encode_to_bytes(&resp).expect("encode").len();
        assert!(n / 100 <= 20, "{n} bytes for 100 batch results");
    }

    #[test]
    fn large_fields_are_not_copied() {
        let frame = Bytes::from(vec![9u8; 100_000]);
        let segs = encode_request_frame(
            5,
            &Forward {
                client_host: "10.0.0.1".into(),
                frame: frame.clone(),
            },
        )
        .expect("encode");
        assert_eq!(segs.len(), 2);
        assert_eq!(segs[1].as_ptr(), frame.as_ptr());
        let whole = ferry_protocol::frame::concat(&segs);
        let call = decode_call(&whole.slice(4..)).expect("decode");
        let RpcBody::Forward(f) = call.body else {
            panic!("not a forward")
        };
        assert_eq!(f.frame, frame);
    }

    #[test]
    fn traffic_renders_by_zone_kind_and_direction() {
        let t = RpcTraffic::new();
        t.zone("us-east-1b").add(RpcKind::Handoff, 100, 20);
        t.zone("us-east-1b").add(RpcKind::Handoff, 1, 2);
        t.zone("us-east-1c").add(RpcKind::Replica, 5, 500);
        assert_eq!(
            t.snapshot(),
            vec![
                ("us-east-1b".to_string(), "handoff", 101, 22),
                ("us-east-1c".to_string(), "replica", 5, 500),
            ]
        );
        let mut o = String::new();
        t.render("us-east-1a", &mut o);
        assert!(o.starts_with("# TYPE ferry_zone_bytes_total counter\n"));
        assert!(o.contains("ferry_zone_bytes_total{local_zone=\"us-east-1a\",peer_zone=\"us-east-1b\",kind=\"handoff\",direction=\"out\"} 101\n"), "{o}");
        assert!(o.contains("ferry_zone_bytes_total{local_zone=\"us-east-1a\",peer_zone=\"us-east-1c\",kind=\"replica\",direction=\"in\"} 500\n"));
        // Label values are escaped (through crate::prom).
        t.zone("q\"z").add(RpcKind::Replica, 1, 1);
        let mut o = String::new();
        t.render("us-east-1a", &mut o);
        assert!(o.contains("peer_zone=\"q\\\"z\""), "{o}");
    }

    #[test]
    fn errors_map_to_retriable_kafka_codes() {
        let t = RpcError::Timeout {
            node_id: 1,
            after: Duration::from_secs(1),
        };
        assert!(t.is_retriable());
        assert_eq!(t.error_code(), ErrorCode::REQUEST_TIMED_OUT);
        let l = RpcError::ConnectionLost {
            node_id: 1,
            reason: "x".into(),
        };
        assert!(l.is_retriable());
        // Sent and unanswered: possibly written, never "not written".
        assert_eq!(l.error_code(), ErrorCode::REQUEST_TIMED_OUT);
        assert!(!RpcError::Trailing { bytes: 1 }.is_retriable());
    }
}
