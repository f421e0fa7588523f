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
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

    /// The Kafka error a proxy gives its client for this failure: a
    /// timeout is REQUEST_TIMED_OUT, an unreachable or lost leader
    /// NOT_LEADER_OR_FOLLOWER (the client refreshes its metadata), and
    /// anything else UNKNOWN_SERVER_ERROR.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            RpcError::Timeout { .. } => ErrorCode::REQUEST_TIMED_OUT,
            RpcError::Connect { .. } | RpcError::ConnectionLost { .. } => {
                ErrorCode::NOT_LEADER_OR_FOLLOWER
            }
            _ => ErrorCode::UNKNOWN_SERVER_ERROR,
        }
    }
}

// ---------------------------------------------------------------------------
// Reading and writing the primitives.
// ---------------------------------------------------------------------------

/// A checked reader over a message's bytes. Every read says what it reads,
/// for the error; `Bytes` fields are views of the input, not copies.
#[derive(Debug)]
pub struct Reader {
    buf: Bytes,
}

impl Reader {
    pub fn new(buf: Bytes) -> Reader {
        Reader { buf }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn need(&self, need: usize, what: &'static str) -> Result<(), RpcError> {
        if self.buf.len() < need {
            return Err(RpcError::Truncated {
                what,
                need,
                have: self.buf.len(),
            });
        }
        Ok(())
    }

    pub fn i16(&mut self, what: &'static str) -> Result<i16, RpcError> {
        self.need(2, what)?;
        Ok(self.buf.get_i16())
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, RpcError> {
        self.need(2, what)?;
        Ok(self.buf.get_u16())
    }

    pub fn i32(&mut self, what: &'static str) -> Result<i32, RpcError> {
        self.need(4, what)?;
        Ok(self.buf.get_i32())
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, RpcError> {
        self.need(4, what)?;
        Ok(self.buf.get_u32())
    }

    pub fn i64(&mut self, what: &'static str) -> Result<i64, RpcError> {
        self.need(8, what)?;
        Ok(self.buf.get_i64())
    }

    pub fn u64(&mut self, what: &'static str) -> Result<u64, RpcError> {
        self.need(8, what)?;
        Ok(self.buf.get_u64())
    }

    pub fn array16(&mut self, what: &'static str) -> Result<[u8; 16], RpcError> {
        self.need(16, what)?;
        let mut a = [0u8; 16];
        self.buf.copy_to_slice(&mut a);
        Ok(a)
    }

    /// `n` bytes, as a view of the input.
    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<Bytes, RpcError> {
        self.need(n, what)?;
        Ok(self.buf.split_to(n))
    }

    /// A `u16`-length UTF-8 string of at most [`STRING_BYTES_MAX`] bytes.
    pub fn string(&mut self, what: &'static str) -> Result<Arc<str>, RpcError> {
        let len = self.u16(what)? as usize;
        if len > STRING_BYTES_MAX {
            return Err(RpcError::StringTooLong {
                what,
                len,
                max: STRING_BYTES_MAX,
            });
        }
        self.need(len, what)?;
        let s = std::str::from_utf8(&self.buf[..len])
            .map_err(|_| RpcError::NotUtf8 { what })?
            .into();
        self.buf.advance(len);
        Ok(s)
    }

    /// A `u32` array count, refused unless `count` items of at least
    /// `item_bytes_min` bytes each fit in what is left, so a hostile count
    /// never reserves more memory than the message could fill.
    pub fn count(&mut self, what: &'static str, item_bytes_min: usize) -> Result<usize, RpcError> {
        let count = self.u32(what)?;
        let fits = self.buf.len() / item_bytes_min.max(1);
        if count as usize > fits {
            return Err(RpcError::Count {
                what,
                count: count.into(),
                remaining: self.buf.len(),
            });
        }
        Ok(count as usize)
    }

    /// Ends the message: anything left over is an error.
    pub fn finish(self) -> Result<(), RpcError> {
        if !self.buf.is_empty() {
            return Err(RpcError::Trailing {
                bytes: self.buf.len(),
            });
        }
        Ok(())
    }
}

/// Builds a message as segments: small fields are copied into one buffer,
/// large `Bytes` fields are sent as views of their own.
#[derive(Debug, Default)]
pub struct Writer {
    segs: Vec<Bytes>,
    cur: BytesMut,
    len: usize,
}

impl Writer {
    pub fn new() -> Writer {
        Writer {
            segs: Vec::new(),
            cur: BytesMut::with_capacity(256),
            len: 0,
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn i16(&mut self, v: i16) {
        self.cur.put_i16(v);
        self.len += 2;
    }

    pub fn u16(&mut self, v: u16) {
        self.cur.put_u16(v);
        self.len += 2;
    }

    pub fn i32(&mut self, v: i32) {
        self.cur.put_i32(v);
        self.len += 4;
    }

    pub fn u32(&mut self, v: u32) {
        self.cur.put_u32(v);
        self.len += 4;
    }

    pub fn i64(&mut self, v: i64) {
        self.cur.put_i64(v);
        self.len += 8;
    }

    pub fn u64(&mut self, v: u64) {
        self.cur.put_u64(v);
        self.len += 8;
    }

    pub fn array16(&mut self, v: &[u8; 16]) {
        self.cur.put_slice(v);
        self.len += 16;
    }

    pub fn string(&mut self, s: &str, what: &'static str) -> Result<(), RpcError> {
        if s.len() > STRING_BYTES_MAX {
            return Err(RpcError::StringTooLong {
                what,
                len: s.len(),
                max: STRING_BYTES_MAX,
            });
        }
        self.u16(s.len() as u16);
        self.cur.put_slice(s.as_bytes());
        self.len += s.len();
        Ok(())
    }

    pub fn count(&mut self, n: usize, what: &'static str) -> Result<(), RpcError> {
        let n = u32::try_from(n).map_err(|_| RpcError::TooMany {
            what,
            count: n,
            max: u32::MAX as usize,
        })?;
        self.u32(n);
        Ok(())
    }

    /// Raw bytes: large ones become a segment of their own, uncopied.
    pub fn bytes(&mut self, b: &Bytes) {
        if b.len() >= ZERO_COPY_BYTES_MIN {
            if !self.cur.is_empty() {
                self.segs.push(self.cur.split().freeze());
            }
            self.segs.push(b.clone());
        } else {
            self.cur.put_slice(b);
        }
        self.len += b.len();
    }

    /// The segments, in order.
    pub fn into_segments(mut self) -> Vec<Bytes> {
        if !self.cur.is_empty() {
            self.segs.push(self.cur.freeze());
        }
        self.segs
    }

    /// The segments of a frame whose first 4 bytes were written as a
    /// placeholder: the size prefix is set to the bytes after it.
    fn into_frame(self) -> Result<Vec<Bytes>, RpcError> {
        let size = self.len.saturating_sub(4);
        let size = i32::try_from(size).map_err(|_| RpcError::TooMany {
            what: "frame bytes",
            count: size,
            max: i32::MAX as usize,
        })?;
        let mut segs = self.into_segments();
        if let Some(first) = segs.first_mut() {
            // The first segment is ours alone, so this does not copy.
            let mut m = BytesMut::from(std::mem::take(first));
            if m.len() >= 4 {
                m[..4].copy_from_slice(&size.to_be_bytes());
            }
            *first = m.freeze();
        }
        Ok(segs)
    }
}

/// A message's payload codec, version 0.
pub trait RpcMessage: Sized {
    fn encode(&self, w: &mut Writer) -> Result<(), RpcError>;
    /// Reads the message from `r`, leaving anything after it unread.
    fn decode(r: &mut Reader) -> Result<Self, RpcError>;
}

/// A request: its API key, its traffic kind, and its response type.
pub trait RpcRequest: RpcMessage {
    const API_KEY: i16;
    const KIND: RpcKind;
    type Response: RpcMessage;
}

/// `m` encoded as one buffer (for tests and sizes; frames use segments).
pub fn encode_to_bytes<M: RpcMessage>(m: &M) -> Result<Bytes, RpcError> {
    let mut w = Writer::new();
    m.encode(&mut w)?;
    let segs = w.into_segments();
    if segs.len() == 1 {
        return Ok(segs.into_iter().next().unwrap_or_default());
    }
    let mut b = BytesMut::with_capacity(segs.iter().map(Bytes::len).sum());
    for s in &segs {
        b.put_slice(s);
    }
    Ok(b.freeze())
}

/// A whole payload as `M`: trailing bytes are an error.
pub fn decode_exact<M: RpcMessage>(payload: Bytes) -> Result<M, RpcError> {
    let mut r = Reader::new(payload);
    let m = M::decode(&mut r)?;
    r.finish()?;
    Ok(m)
}

/// A request frame, size prefix included.
pub fn encode_request_frame<R: RpcRequest>(
    correlation_id: i32,
    req: &R,
) -> Result<Vec<Bytes>, RpcError> {
    let mut w = Writer::new();
    w.i32(0);
    w.i16(R::API_KEY);
    w.i16(RPC_VERSION);
    w.i32(correlation_id);
    req.encode(&mut w)?;
    w.into_frame()
}

/// A response frame, size prefix included.
pub fn encode_response_frame<M: RpcMessage>(
    correlation_id: i32,
    resp: &M,
) -> Result<Vec<Bytes>, RpcError> {
    let mut w = Writer::new();
    w.i32(0);
    w.i32(correlation_id);
    resp.encode(&mut w)?;
    w.into_frame()
}

/// Object keys, each written once per message.
struct KeyTable<'a> {
    index: HashMap<&'a str, u32>,
    keys: Vec<&'a str>,
}

impl<'a> KeyTable<'a> {
    fn new() -> Self {
        KeyTable {
            index: HashMap::new(),
            keys: Vec::new(),
        }
    }

    fn add(&mut self, key: &'a str) -> Result<(), RpcError> {
        if !self.index.contains_key(key) {
            if self.keys.len() >= KEYS_MAX {
                return Err(RpcError::TooMany {
                    what: "object keys",
                    count: self.keys.len() + 1,
                    max: KEYS_MAX,
                });
            }
            self.index.insert(key, self.keys.len() as u32);
            self.keys.push(key);
        }
        Ok(())
    }

    fn get(&self, key: &str) -> u32 {
        self.index.get(key).copied().unwrap_or(0)
    }

    fn encode(&self, w: &mut Writer) -> Result<(), RpcError> {
        w.count(self.keys.len(), "object keys")?;
        for k in &self.keys {
            w.string(k, "object key")?;
        }
        Ok(())
    }

    fn decode(r: &mut Reader) -> Result<Vec<Arc<str>>, RpcError> {
        let n = r.count("object keys", 2)?;
        if n > KEYS_MAX {
            return Err(RpcError::TooMany {
                what: "object keys",
                count: n,
                max: KEYS_MAX,
            });
        }
        let mut keys = Vec::with_capacity(n);
        for _ in 0..n {
            keys.push(r.string("object key")?);
        }
        Ok(keys)
    }
}

fn key_at(keys: &[Arc<str>], r: &mut Reader, what: &'static str) -> Result<Arc<str>, RpcError> {
    let index = r.u32(what)?;
    keys.get(index as usize).cloned().ok_or(RpcError::KeyIndex {
        what,
        index,
        keys: keys.len(),
    })
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

// ---------------------------------------------------------------------------
// Server side.
// ---------------------------------------------------------------------------

/// What a node does with each RPC. Shard-local: the futures need not be
/// `Send`, so an implementation may hold `Rc`s and `RefCell` borrows
/// across awaits (not borrows, across awaits, in practice).
///
/// Implemented for `Rc<Shard>` (not `Shard`), since the shard's own
/// methods take `self: &Rc<Shard>`.
#[allow(async_fn_in_trait)] // deliberately not Send: one glommio executor per shard
pub trait RpcHandler {
    async fn handoff_commit(&self, req: HandoffCommit) -> HandoffCommitResponse;
    async fn replica_read(&self, req: ReplicaRead) -> ReplicaReadResponse;
    async fn forward(&self, req: Forward) -> ForwardResponse;
}

/// A decoded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcBody {
    HandoffCommit(HandoffCommit),
    ReplicaRead(ReplicaRead),
    Forward(Forward),
}

impl RpcBody {
    pub fn kind(&self) -> RpcKind {
        match self {
            RpcBody::HandoffCommit(_) => RpcKind::Handoff,
            RpcBody::ReplicaRead(_) => RpcKind::Replica,
            RpcBody::Forward(_) => RpcKind::Forward,
        }
    }
}

/// A decoded request frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcCall {
    pub correlation_id: i32,
    pub body: RpcBody,
}

/// Whether a request frame (without its size prefix) carries one of
/// Ferry's private API keys.
pub fn is_rpc_frame(frame: &[u8]) -> bool {
    frame.len() >= 2 && i16::from_be_bytes([frame[0], frame[1]]) >= RPC_API_KEY_MIN
}

/// Reads a request frame (without its size prefix). The payload's `Bytes`
/// fields are views of `frame`.
pub fn decode_call(frame: &Bytes) -> Result<RpcCall, RpcError> {
    if frame.len() < REQUEST_HEADER_BYTES {
        return Err(RpcError::ShortFrame { len: frame.len() });
    }
    let mut r = Reader::new(frame.clone());
    let api_key = r.i16("api_key")?;
    let version = r.i16("api_version")?;
    let correlation_id = r.i32("correlation_id")?;
    if !matches!(api_key, HANDOFF_COMMIT | REPLICA_READ | FORWARD) {
        return Err(RpcError::UnknownApi { api_key });
    }
    if version != RPC_VERSION {
        return Err(RpcError::UnsupportedVersion { api_key, version });
    }
    let body = match api_key {
        HANDOFF_COMMIT => RpcBody::HandoffCommit(HandoffCommit::decode(&mut r)?),
        REPLICA_READ => RpcBody::ReplicaRead(ReplicaRead::decode(&mut r)?),
        _ => RpcBody::Forward(Forward::decode(&mut r)?),
    };
    r.finish()?;
    Ok(RpcCall {
        correlation_id,
        body,
    })
}

/// Runs `call` through `handler` and returns the response frame's segments
/// (size prefix included, ready to write). `None` only if the handler's
/// answer cannot be encoded (a string over [`STRING_BYTES_MAX`]): that is
/// logged, and the caller then gets no answer and times out.
pub async fn serve_call<H: RpcHandler>(handler: &H, call: RpcCall) -> Option<Vec<Bytes>> {
    let id = call.correlation_id;
    let encoded = match call.body {
        RpcBody::HandoffCommit(req) => {
            encode_response_frame(id, &handler.handoff_commit(req).await)
        }
        RpcBody::ReplicaRead(req) => encode_response_frame(id, &handler.replica_read(req).await),
        RpcBody::Forward(req) => encode_response_frame(id, &handler.forward(req).await),
    };
    match encoded {
        Ok(segs) => Some(segs),
        Err(e) => {
            tracing::error!(error = %e, correlation_id = id, "RPC response could not be encoded");
            None
        }
    }
}

/// [`decode_call`] then [`serve_call`]. `None` for a frame that does not
/// decode (logged): the connection should then be closed, as Kafka closes
/// one that sends a request it cannot parse.
pub async fn serve_frame<H: RpcHandler>(handler: &H, frame: &Bytes) -> Option<Vec<Bytes>> {
    match decode_call(frame) {
        Ok(call) => serve_call(handler, call).await,
        Err(e) => {
            tracing::info!(error = %e, "undecodable RPC frame");
            None
        }
    }
}

/// For [`crate::broker::conn`]: decodes an RPC frame at once and spawns its
/// handler on this shard. An error (logged here) means the frame does not
/// decode and the connection is to be closed.
pub fn spawn_call<H: RpcHandler + Clone + 'static>(
    handler: &H,
    frame: &Bytes,
    peer: Option<SocketAddr>,
) -> Result<glommio::Task<Option<Vec<Bytes>>>, RpcError> {
    let call = decode_call(frame).inspect_err(|e| {
        tracing::info!(peer = ?peer, error = %e, "undecodable RPC frame, closing connection");
    })?;
    let h = handler.clone();
    Ok(glommio::spawn_local(
        async move { serve_call(&h, call).await },
    ))
}

// ---------------------------------------------------------------------------
// Traffic accounting.
// ---------------------------------------------------------------------------

/// What an RPC is for, as counted in `ferry_zone_bytes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RpcKind {
    Handoff,
    Replica,
    Forward,
    /// Kafka clients' own connections (counted by the node they talk to,
    /// by the client's zone; `unknown` when it has none).
    Client,
    /// The node's connections to etcd (leases, watches, the cluster's
    /// tables), by the zone of the etcd endpoint; `unknown` when no zone
    /// CIDR block holds its address.
    Coordinator,
}

impl RpcKind {
    pub const ALL: [RpcKind; 5] = [
        RpcKind::Handoff,
        RpcKind::Replica,
        RpcKind::Forward,
        RpcKind::Client,
        RpcKind::Coordinator,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RpcKind::Handoff => "handoff",
            RpcKind::Replica => "replica",
            RpcKind::Forward => "forward",
            RpcKind::Client => "client",
            RpcKind::Coordinator => "coordinator",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Bytes to and from one peer zone, by kind.
#[derive(Debug, Default)]
pub struct ZoneTraffic {
    out: [AtomicU64; RpcKind::ALL.len()],
    inn: [AtomicU64; RpcKind::ALL.len()],
}

impl ZoneTraffic {
    pub fn add(&self, kind: RpcKind, bytes_out: u64, bytes_in: u64) {
        if bytes_out > 0 {
            self.out[kind.index()].fetch_add(bytes_out, Relaxed);
        }
        if bytes_in > 0 {
            self.inn[kind.index()].fetch_add(bytes_in, Relaxed);
        }
    }

    /// Bytes out and in for `kind`.
    pub fn get(&self, kind: RpcKind) -> (u64, u64) {
        (
            self.out[kind.index()].load(Relaxed),
            self.inn[kind.index()].load(Relaxed),
        )
    }
}

/// A node's RPC bytes by peer zone and kind, counted by the caller: "out"
/// is the request frames a node sent, "in" the response frames it got
/// back, size prefixes and headers included. The callee does not count, so
/// summing over nodes counts every byte once. The map is locked once per
/// connection (the client keeps the zone's counters); each call then adds
/// to atomics.
#[derive(Debug, Default)]
pub struct RpcTraffic {
    zones: Mutex<HashMap<String, Arc<ZoneTraffic>>>,
}

impl RpcTraffic {
    pub fn new() -> RpcTraffic {
        RpcTraffic::default()
    }

    /// The counters for `zone`, created on first use.
    pub fn zone(&self, zone: &str) -> Arc<ZoneTraffic> {
        let mut zones = self.zones.lock();
        if let Some(z) = zones.get(zone) {
            return z.clone();
        }
        let z = Arc::new(ZoneTraffic::default());
        zones.insert(zone.to_owned(), z.clone());
        z
    }

    /// `(peer zone, kind, bytes out, bytes in)` for every zone and kind
    /// with traffic, sorted.
    pub fn snapshot(&self) -> Vec<(String, &'static str, u64, u64)> {
        let zones = self.zones.lock();
        let mut rows = Vec::new();
        for (zone, t) in zones.iter() {
            for kind in RpcKind::ALL {
                let (o, i) = t.get(kind);
                if o > 0 || i > 0 {
                    rows.push((zone.clone(), kind.as_str(), o, i));
                }
            }
        }
        rows.sort();
        rows
    }

    /// Appends `ferry_zone_bytes_total{local_zone,peer_zone,kind,direction}`
    /// in Prometheus text format to `o`.
    pub fn render(&self, local_zone: &str, o: &mut String) {
        let _ = writeln!(o, "# TYPE ferry_zone_bytes_total counter");
        let local = label(local_zone);
        let mut cross = 0u64;
        for (zone, kind, bytes_out, bytes_in) in self.snapshot() {
            let peer = label(&zone);
            // Clients of unknown zone are not counted as crossing: nothing
            // says where they are.
            if zone != local_zone && zone != "unknown" {
                cross += bytes_out + bytes_in;
            }
            for (direction, n) in [("out", bytes_out), ("in", bytes_in)] {
                let _ = writeln!(
                    o,
                    "ferry_zone_bytes_total{{local_zone=\"{local}\",peer_zone=\"{peer}\",kind=\"{kind}\",direction=\"{direction}\"}} {n}"
                );
            }
        }
        // Every node-to-node byte this node sent to or received from
        // another zone, as its calls counted them.
        let _ = writeln!(
            o,
            "# TYPE ferry_cross_zone_bytes_total counter\nferry_cross_zone_bytes_total{{local_zone=\"{local}\"}} {cross}"
        );
    }
}

/// A Prometheus label value, escaped.
fn label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

// ---------------------------------------------------------------------------
// Client side.
// ---------------------------------------------------------------------------

/// Frames queued for one connection's writer.
const WRITE_QUEUE_FRAMES: usize = 1024;
/// Most frames the writer gathers into one write.
const WRITE_GATHER_FRAMES: usize = 256;
/// Most bytes one read asks for.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// One shard's RPC client: one connection per peer node (reopened when
/// the peer's address changes or the connection breaks), shared by every
/// call to that node, with any number of calls in flight on it.
pub struct RpcClient {
    traffic: Arc<RpcTraffic>,
    frame_bytes_max: usize,
    peers: RefCell<HashMap<i32, Rc<Peer>>>,
}

impl RpcClient {
    /// `frame_bytes_max` bounds the responses it accepts
    /// (`socket.request.max.bytes`).
    pub fn new(traffic: Arc<RpcTraffic>, frame_bytes_max: usize) -> RpcClient {
        RpcClient {
            traffic,
            frame_bytes_max,
            peers: RefCell::new(HashMap::new()),
        }
    }

    /// Sends `req` to `to` and waits at most `timeout` (connecting
    /// included) for the answer. Retriable errors ([`RpcError::is_retriable`])
    /// mean the call may or may not have reached the peer.
    ///
    /// A call that times out while nothing at all arrived on its
    /// connection also breaks the connection (its other calls fail with
    /// [`RpcError::ConnectionLost`]), so a peer that went silent without
    /// closing (a dead host, a partition) is reconnected to, not waited on
    /// forever. TCP keepalive catches the same on idle connections.
    pub async fn call<R: RpcRequest>(
        &self,
        to: &Member,
        req: &R,
        timeout: Duration,
    ) -> Result<R::Response, RpcError> {
        let timed_out = || RpcError::Timeout {
            node_id: to.node_id,
            after: timeout,
        };
        let start = Instant::now();
        let peer = self.peer(to);
        let conn = within(timeout, peer.connection(self.frame_bytes_max, timeout))
            .await
            .ok_or_else(timed_out)??;
        let shared = &conn.shared;
        let id = shared.next_id.get();
        shared.next_id.set(id.wrapping_add(1));
        let segs = encode_request_frame(id, req)?;
        let bytes_out: usize = segs.iter().map(Bytes::len).sum();
        let (tx, rx) = oneshot::channel();
        shared.pending.borrow_mut().insert(id, tx);
        // Forgets the call if it ends here, times out or is dropped.
        let _pending = PendingGuard { shared, id };
        if let Some(e) = shared.broken.borrow().clone() {
            return Err(e);
        }
        let frames_before = shared.frames_in.get();
        let left = timeout.saturating_sub(start.elapsed());
        let answer = within(left, async {
            if conn.tx.send(segs).await.is_err() {
                return Err(shared.lost());
            }
            peer.counters.add(R::KIND, bytes_out as u64, 0);
            match rx.await {
                Ok(r) => r,
                Err(_) => Err(shared.lost()),
            }
        })
        .await;
        let Some(answer) = answer else {
            if shared.frames_in.get() == frames_before {
                shared.fail(RpcError::ConnectionLost {
                    node_id: to.node_id,
                    reason: format!("nothing received for {timeout:?}"),
                });
            }
            return Err(timed_out());
        };
        let payload = answer?;
        let bytes_in = 4 + RESPONSE_HEADER_BYTES + payload.len();
        peer.counters.add(R::KIND, 0, bytes_in as u64);
        decode_exact(payload)
    }

    pub async fn handoff_commit(
        &self,
        to: &Member,
        req: &HandoffCommit,
        timeout: Duration,
    ) -> Result<HandoffCommitResponse, RpcError> {
        self.call(to, req, timeout).await
    }

    pub async fn replica_read(
        &self,
        to: &Member,
        req: &ReplicaRead,
        timeout: Duration,
    ) -> Result<ReplicaReadResponse, RpcError> {
        self.call(to, req, timeout).await
    }

    pub async fn forward(
        &self,
        to: &Member,
        req: &Forward,
        timeout: Duration,
    ) -> Result<ForwardResponse, RpcError> {
        self.call(to, req, timeout).await
    }

    /// Closes the connection to `node_id` (a node that left the cluster).
    /// Calls in flight on it fail with [`RpcError::ConnectionLost`].
    pub fn forget(&self, node_id: i32) {
        let peer = self.peers.borrow_mut().remove(&node_id);
        if let Some(conn) = peer.and_then(|p| p.conn.borrow_mut().take()) {
            conn.shared.fail(RpcError::ConnectionLost {
                node_id,
                reason: "node left the cluster".into(),
            });
        }
    }

    /// Whether a live connection to `node_id` is open.
    pub fn is_connected(&self, node_id: i32) -> bool {
        self.peers
            .borrow()
            .get(&node_id)
            .is_some_and(|p| p.live().is_some())
    }

    /// `(peer zone, kind, bytes out, bytes in)`, node-wide.
    pub fn traffic(&self) -> Vec<(String, &'static str, u64, u64)> {
        self.traffic.snapshot()
    }

    fn peer(&self, to: &Member) -> Rc<Peer> {
        let mut peers = self.peers.borrow_mut();
        if let Some(p) = peers.get(&to.node_id) {
            if p.host == to.host && p.port == to.port && p.zone == to.zone {
                return p.clone();
            }
            tracing::info!(node = to.node_id, host = %to.host, port = to.port, "peer moved, reconnecting");
        }
        let p = Rc::new(Peer {
            node_id: to.node_id,
            host: to.host.clone(),
            port: to.port,
            zone: to.zone.clone(),
            counters: self.traffic.zone(&to.zone),
            conn: RefCell::new(None),
            connecting: glommio::sync::Semaphore::new(1),
        });
        // The old peer's connection closes once no call uses it.
        peers.insert(to.node_id, p.clone());
        p
    }
}

/// A peer node as last seen, and its connection.
struct Peer {
    node_id: i32,
    host: String,
    port: u16,
    zone: String,
    counters: Arc<ZoneTraffic>,
    conn: RefCell<Option<Rc<Conn>>>,
    /// One connect at a time; other callers wait for it.
    connecting: glommio::sync::Semaphore,
}

impl Peer {
    fn live(&self) -> Option<Rc<Conn>> {
        self.conn
            .borrow()
            .as_ref()
            .filter(|c| c.shared.broken.borrow().is_none())
            .cloned()
    }

    async fn connection(
        &self,
        frame_bytes_max: usize,
        timeout: Duration,
    ) -> Result<Rc<Conn>, RpcError> {
        if let Some(c) = self.live() {
            return Ok(c);
        }
        let addr_text = format!("{}:{}", self.host, self.port);
        let connect_err = |reason: String| RpcError::Connect {
            node_id: self.node_id,
            addr: addr_text.clone(),
            reason,
        };
        let _permit = self
            .connecting
            .acquire_permit(1)
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        if let Some(c) = self.live() {
            return Ok(c);
        }
        let addr = resolve(&self.host, self.port).map_err(&connect_err)?;
        let stream = futures_lite::future::or(
            async { TcpStream::connect(addr).await.map_err(|e| e.to_string()) },
            async {
                glommio::timer::sleep(timeout).await;
                Err(format!("connect timed out after {timeout:?}"))
            },
        )
        .await
        .map_err(&connect_err)?;
        let _ = stream.set_nodelay(true);
        keepalive(&stream);
        tracing::debug!(node = self.node_id, addr = %addr, "RPC connection open");
        let conn = Conn::start(self.node_id, stream, frame_bytes_max);
        *self.conn.borrow_mut() = Some(conn.clone());
        Ok(conn)
    }
}

/// `f`'s output, or `None` if it takes longer than `limit`.
async fn within<T>(limit: Duration, f: impl std::future::Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(f.await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await
}

/// TCP keepalive on RPC connections: a peer that vanished is noticed
/// within about 10 + 3 x 3 s even when no call is waiting on it.
fn keepalive(stream: &TcpStream) {
    let fd = std::os::fd::AsRawFd::as_raw_fd(stream);
    // SAFETY: `fd` is `stream`'s socket, open for this whole function, and
    // `SockRef` only borrows it: it never closes it.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let ka = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(3))
        .with_retries(3);
    if let Err(e) = socket2::SockRef::from(&borrowed).set_tcp_keepalive(&ka) {
        tracing::debug!(error = %e, "cannot set TCP keepalive on an RPC connection");
    }
}

/// `host:port` as a socket address. A host name is resolved by the system
/// resolver, which blocks the shard: members advertise IP addresses in
/// practice, which need no lookup.
fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| format!("{host} resolves to no address"))
}

type Reply = oneshot::Sender<Result<Bytes, RpcError>>;

/// What a connection's caller, reader and writer share.
struct ConnShared {
    node_id: i32,
    pending: RefCell<HashMap<i32, Reply>>,
    /// Set once the connection is unusable; every later call fails fast.
    broken: RefCell<Option<RpcError>>,
    next_id: Cell<i32>,
    /// Response frames received so far.
    frames_in: Cell<u64>,
    tasks: RefCell<Vec<AbortHandle>>,
}

impl ConnShared {
    fn lost(&self) -> RpcError {
        self.broken
            .borrow()
            .clone()
            .unwrap_or(RpcError::ConnectionLost {
                node_id: self.node_id,
                reason: "connection closed".into(),
            })
    }

    /// Marks the connection broken, fails every pending call with `err`,
    /// and stops its reader and writer (which closes the socket).
    fn fail(&self, err: RpcError) {
        if self.broken.borrow().is_some() {
            return;
        }
        tracing::info!(node = self.node_id, error = %err, "RPC connection broken");
        *self.broken.borrow_mut() = Some(err.clone());
        let pending: Vec<Reply> = self.pending.borrow_mut().drain().map(|(_, r)| r).collect();
        for r in pending {
            let _ = r.send(Err(err.clone()));
        }
        for t in self.tasks.borrow_mut().drain(..) {
            t.abort();
        }
    }
}

struct PendingGuard<'a> {
    shared: &'a ConnShared,
    id: i32,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.shared.pending.borrow_mut().remove(&self.id);
    }
}

/// One open connection: the queue to its writer task; its reader task
/// completes the pending calls.
struct Conn {
    shared: Rc<ConnShared>,
    tx: LocalSender<Vec<Bytes>>,
}

impl Conn {
    fn start(node_id: i32, stream: TcpStream, frame_bytes_max: usize) -> Rc<Conn> {
        let shared = Rc::new(ConnShared {
            node_id,
            pending: RefCell::new(HashMap::new()),
            broken: RefCell::new(None),
            next_id: Cell::new(0),
            frames_in: Cell::new(0),
            tasks: RefCell::new(Vec::new()),
        });
        let (rd, wr) = futures_lite::io::split(stream);
        let (tx, rx) = local_channel::new_bounded(WRITE_QUEUE_FRAMES);
        let (reader, abort_reader) =
            futures_util::future::abortable(read_loop(shared.clone(), rd, frame_bytes_max));
        let (writer, abort_writer) =
            futures_util::future::abortable(write_loop(shared.clone(), rx, wr));
        shared
            .tasks
            .borrow_mut()
            .extend([abort_reader, abort_writer]);
        glommio::spawn_local(reader).detach();
        glommio::spawn_local(writer).detach();
        Rc::new(Conn { shared, tx })
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Nobody can call through it any more: close the socket.
        self.shared.fail(RpcError::ConnectionLost {
            node_id: self.shared.node_id,
            reason: "connection replaced".into(),
        });
    }
}

async fn read_loop(
    shared: Rc<ConnShared>,
    mut rd: futures_lite::io::ReadHalf<TcpStream>,
    frame_bytes_max: usize,
) {
    let frames = FrameReader::new(frame_bytes_max);
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let reason = 'conn: loop {
        loop {
            let f = match frames.next_frame(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => break 'conn e.to_string(),
            };
            if f.len() < RESPONSE_HEADER_BYTES {
                break 'conn format!("response frame of {} bytes", f.len());
            }
            shared.frames_in.set(shared.frames_in.get() + 1);
            let id = i32::from_be_bytes([f[0], f[1], f[2], f[3]]);
            let reply = shared.pending.borrow_mut().remove(&id);
            match reply {
                Some(r) => {
                    let _ = r.send(Ok(f.slice(RESPONSE_HEADER_BYTES..)));
                }
                None => tracing::debug!(
                    node = shared.node_id,
                    correlation_id = id,
                    "answer to a call no longer waiting"
                ),
            }
        }
        let need = match frames.bytes_needed(&buf) {
            Ok(n) => n.max(1),
            Err(e) => break e.to_string(),
        };
        let chunk = need.clamp(4096, READ_CHUNK_BYTES);
        buf.reserve(need.max(chunk));
        let len = buf.len();
        buf.resize(len + need.max(chunk), 0);
        match rd.read(&mut buf[len..]).await {
            Ok(0) => {
                buf.truncate(len);
                break "closed by the peer".to_string();
            }
            Ok(n) => buf.truncate(len + n),
            Err(e) => {
                buf.truncate(len);
                break e.to_string();
            }
        }
    };
    shared.fail(RpcError::ConnectionLost {
        node_id: shared.node_id,
        reason,
    });
}

async fn write_loop(
    shared: Rc<ConnShared>,
    rx: LocalReceiver<Vec<Bytes>>,
    mut wr: futures_lite::io::WriteHalf<TcpStream>,
) {
    let mut frames = rx.stream();
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    while let Some(first) = frames.next().await {
        // Gather what else is queued, so many small calls go in one write.
        let mut batch = vec![first];
        while batch.len() < WRITE_GATHER_FRAMES {
            match futures_lite::future::poll_once(frames.next()).await {
                Some(Some(segs)) => batch.push(segs),
                _ => break,
            }
        }
        let r = async {
            for seg in batch.iter().flatten() {
                if seg.len() >= ZERO_COPY_BYTES_MIN {
                    if !buf.is_empty() {
                        wr.write_all(&buf).await?;
                        buf.clear();
                    }
                    wr.write_all(seg).await?;
                } else {
                    buf.put_slice(seg);
                }
            }
            if !buf.is_empty() {
                wr.write_all(&buf).await?;
                buf.clear();
            }
            Ok::<(), std::io::Error>(())
        }
        .await;
        if let Err(e) = r {
            shared.fail(RpcError::ConnectionLost {
                node_id: shared.node_id,
                reason: format!("write failed: {e}"),
            });
            return;
        }
    }
    let _ = wr.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator, for property tests without a
    /// dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            // xorshift64*
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
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

    #[test]
    fn every_message_round_trips_and_refuses_every_truncation() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..200 {
            check(&handoff(&mut rng));
            check(&handoff_response(&mut rng));
            check(&replica_read(&mut rng));
            check(&replica_response(&mut rng));
            check(&forward(&mut rng));
            check(&forward_response(&mut rng));
        }
    }

    #[test]
    fn request_frames_decode_as_calls_with_every_truncation_refused() {
        let mut rng = Rng(42);
        for i in 0..100 {
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
    fn random_bytes_never_panic() {
        let mut rng = Rng(7);
        for i in 0..20_000u32 {
            let len = rng.below(200) as usize;
            let mut v: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            // Half the time a valid header, so the payload decoders run.
            if i % 2 == 0 && v.len() >= 8 {
                let key = RPC_API_KEY_MIN + (i % 4) as i16;
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
        }
    }

    /// Mutating single bytes of valid messages (mostly lengths and counts)
    /// is refused or decodes, never panics.
    #[test]
    fn mutated_messages_never_panic() {
        let mut rng = Rng(99);
        for _ in 0..300 {
            let m = handoff(&mut rng);
            let enc = encode_to_bytes(&m).expect("encode");
            for _ in 0..20 {
                let mut v = enc.to_vec();
                if v.is_empty() {
                    break;
                }
                let at = rng.below(v.len() as u64) as usize;
                v[at] = rng.next() as u8;
                let _ = decode_exact::<HandoffCommit>(Bytes::from(v));
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
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
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
        assert!(l.error_code().is_retriable());
        assert!(!RpcError::Trailing { bytes: 1 }.is_retriable());
    }
}
