//! What the shards need from the WAL: append a batch and learn when it is
//! durable, and read a durable batch back. Shards are glommio executors, not
//! tokio, so both answers come back through `futures_channel::oneshot`, which
//! any executor can await.
//!
//! The implementation over the `ferry-wal` writer lives in [`crate::storage::wal_log`];
//! tests can put their own in its place.

use bytes::Bytes;
use futures_channel::oneshot;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Where a durable batch lives: an object, a byte range in it, and the CRC of
/// those bytes.
pub type Location = ferry_wal::WalLocation;

/// The idempotent-producer fields of a batch.
pub type ProducerFields = ferry_wal::ProducerFields;

/// One batch to make durable, as segments that are written without joining.
#[derive(Debug, Clone)]
pub struct AppendEntry {
    pub topic: Arc<str>,
    pub topic_id: [u8; 16],
    pub partition: i32,
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    pub record_count: i32,
    pub producer: ProducerFields,
    pub segments: [Bytes; 2],
    /// The leader epoch the batch was appended under.
    pub leader_epoch: i32,
    /// Where the batch's bytes are when they are not in `segments` (empty):
    /// a range of a proxy's handoff object. The WAL then records only this
    /// reference.
    pub external: Option<Location>,
}

/// The two kinds of objects a node owns and numbers in sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// `wal/<node>/<seq>.wal`.
    Wal,
    /// `handoff/<node>/<seq>.wal`, written as a proxy.
    Handoff,
}

impl ObjectKind {
    pub fn prefix(self) -> &'static str {
        match self {
            ObjectKind::Wal => "wal",
            ObjectKind::Handoff => "handoff",
        }
    }
}

/// What the bucket holds for one partition, from every node's objects.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// Its batches in offset order, with their producer state.
    pub batches: Vec<(LogBatch, RecoveredProducer)>,
    /// The next offset to assign (the log end, or a newer epoch's start).
    pub log_end: i64,
    /// Not empty if the partition cannot be rebuilt: the keys of the
    /// unread (corrupt) objects its history may be in. It is then not
    /// served, and `batches` is empty.
    pub blocked: Vec<String>,
}

/// What [`DurableLog::load_partitions`] answers, by (topic id, partition).
pub type LoadedPartitions = std::collections::HashMap<([u8; 16], i32), Loaded>;

impl AppendEntry {
    /// An epoch marker: "leader epoch `epoch` of this partition starts at
    /// `start`". A new leader writes one before it serves, so that what a
    /// fenced leader writes later is never taken into the log.
    pub fn epoch_marker(
        topic: Arc<str>,
        topic_id: [u8; 16],
        partition: i32,
        epoch: i32,
        start: i64,
    ) -> AppendEntry {
        AppendEntry {
            topic,
            topic_id,
            partition,
            base_offset: start,
            last_offset: start - 1,
            max_timestamp: -1,
            record_count: 0,
            producer: ProducerFields::default(),
            segments: [Bytes::new(), Bytes::new()],
            leader_epoch: epoch,
            external: None,
        }
    }

    pub fn len(&self) -> usize {
        self.segments.iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What can go wrong with the durable log, typed down to the WAL's own
/// error, so that the place that picks a Kafka error code can tell a
/// retriable store error from a corrupt object.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DurableError {
    /// Too much data is waiting for the bucket: retry later.
    #[error("WAL backpressure: {inflight_bytes} bytes are waiting for the bucket")]
    Backpressure { inflight_bytes: u64 },
    /// The WAL (its writer, reader or recovery) failed.
    #[error(transparent)]
    Wal(#[from] ferry_wal::WalError),
    /// An object-store call of the log's own (metadata, listings,
    /// deletions) failed.
    #[error("{op} {key}: {source}")]
    Store {
        op: &'static str,
        key: String,
        #[source]
        source: std::sync::Arc<object_store::Error>,
    },
    /// A batch's bytes cannot be read back: it is not durable yet, or its
    /// object does not hold what the log says.
    #[error("batch in {key}: {reason}")]
    Unreadable { key: String, reason: &'static str },
    /// A read of several batches came back with another count.
    #[error("{got} batches read back for {wanted}")]
    ShortRead { got: usize, wanted: usize },
    #[error("the WAL is shut down")]
    Closed,
}

impl DurableError {
    /// True if the same request can succeed later without a change by the
    /// caller.
    pub fn is_retriable(&self) -> bool {
        match self {
            DurableError::Backpressure { .. } | DurableError::Store { .. } => true,
            DurableError::Wal(e) => e.is_retriable(),
            DurableError::Unreadable { .. } | DurableError::ShortRead { .. } => false,
            DurableError::Closed => false,
        }
    }

    /// True only if the store proved the object absent (404).
    pub fn is_not_found(&self) -> bool {
        match self {
            DurableError::Wal(e) => e.is_not_found(),
            DurableError::Store { source, .. } => {
                matches!(**source, object_store::Error::NotFound { .. })
            }
            _ => false,
        }
    }
}

/// Resolves when the batch is durable (or cannot be made so).
pub type AppendAck = Pin<Box<dyn Future<Output = Result<Location, DurableError>> + Send>>;
/// Resolves to the bytes of several durable batches.
pub type ReadManyAck = Pin<Box<dyn Future<Output = Result<Vec<Bytes>, DurableError>> + Send>>;

/// The produce path's side of the WAL: room for a batch, the append, and
/// what a failed append or a handoff commit needs.
pub trait WalAppender: Send + Sync + 'static {
    /// Checks there is room for `bytes` more before offsets are assigned, so
    /// that a refused batch never consumes offsets.
    fn reserve(&self, bytes: usize) -> Result<(), DurableError>;

    /// Queues `entry` for the next WAL object; the answer comes once that
    /// object is in the bucket. The room was taken by [`WalAppender::reserve`].
    fn append(&self, entry: AppendEntry) -> AppendAck;

    /// After an append to this partition failed, lets appends to it through
    /// again (the caller has moved the partition's log end back).
    fn resume_partition(&self, topic: &str, partition: i32);

    /// Queues `entry` (batches a proxy forwards) for this node's next
    /// handoff object; the answer is where the bytes are, once that object
    /// is in the bucket.
    fn handoff_append(&self, entry: AppendEntry) -> AppendAck;

    /// Seals the pending WAL object now rather than at the end of the
    /// interval: a leader does so for handoff commits, so a cross-zone
    /// produce waits for one interval, the proxy's, not two.
    fn flush(&self);
}

/// Reading batches back from the bucket: a fetch of evicted batches, and a
/// new leader's load.
pub trait BatchReader: Send + Sync + 'static {
    /// Reads durable batches back from the bucket: adjacent ranges of one
    /// object (each location starting where the one before ends), with one
    /// request where the store allows it; a single batch is a run of one.
    fn read_adjacent(&self, locations: Vec<Location>) -> ReadManyAck;

    /// Whether `key` names a handoff object that node `node` wrote: a proxy
    /// hands off batches from its own objects only.
    fn is_handoff_object_of(&self, key: &str, node: i32) -> bool;

    /// Reads the history of some partitions (topic id, partition) from
    /// every node's WAL and compacted objects, fenced by leader epochs: what
    /// a leader taking them over starts from.
    fn load_partitions(
        &self,
        want: Vec<([u8; 16], i32)>,
    ) -> oneshot::Receiver<Result<LoadedPartitions, DurableError>>;
}

/// Small metadata objects: the topic table, group offsets, zone CIDRs.
pub trait MetaStore: Send + Sync + 'static {
    /// Writes a small metadata object (`meta/<name>`): the topic table, group
    /// offsets. `version` orders writes of one name: a write whose version is
    /// not above one already written is dropped (answered `Ok`), because the
    /// newer object already holds what it held. Writes of one name never
    /// overlap. Answers once the object (or a newer one) is in the bucket.
    fn put_meta(
        &self,
        name: &str,
        version: u64,
        data: Bytes,
    ) -> oneshot::Receiver<Result<(), DurableError>>;

    /// Reads a metadata object; `None` if it was never written.
    fn get_meta(&self, name: &str) -> oneshot::Receiver<Result<Option<Bytes>, DurableError>>;
}

/// What happens to objects after they are written: compaction, and
/// deletion by reference.
pub trait ObjectLifecycle: Send + Sync + 'static {
    /// Writes one partition's durable batches (in offset order) into a
    /// compacted object of their own; answers each one's new location once
    /// that object is in the bucket. The old locations stay readable until
    /// the caller stops using them.
    fn compact(
        &self,
        entries: Vec<AppendEntry>,
    ) -> oneshot::Receiver<Result<Vec<Location>, DurableError>>;

    /// Deletes one compacted object that nothing reads from any more.
    fn delete_object(&self, key: Arc<str>) -> oneshot::Receiver<Result<(), DurableError>>;

    /// Deletes node `node`'s objects of `kind` whose sequence number is
    /// below `below` and that are at least `min_age` old; answers how many
    /// went. The caller knows nothing refers to them (see `crate::storage::refs`).
    fn delete_node_objects(
        &self,
        kind: ObjectKind,
        node: u32,
        below: u64,
        min_age: std::time::Duration,
    ) -> oneshot::Receiver<Result<usize, DurableError>>;

    /// The nodes that have objects of `kind` in the bucket.
    fn object_owners(&self, kind: ObjectKind) -> oneshot::Receiver<Result<Vec<u32>, DurableError>>;
}

/// The node's durable log, as a node is started with it (`WalLog`, or
/// `MemoryLog` in tests): every part above, one object shared by every
/// shard (`Send + Sync`; implementations hand work to their own threads).
/// A caller that needs one part takes that trait.
pub trait DurableLog: WalAppender + BatchReader + MetaStore + ObjectLifecycle {
    /// Prometheus lines for the log's own counters.
    fn render_metrics(&self) -> String;
}

/// A durable log held in memory, durable at once. For tests of everything
/// above the WAL; a node using it keeps nothing across restarts.
#[derive(Debug, Default)]
pub struct MemoryLog {
    inner: parking_lot::Mutex<MemoryLogInner>,
}

#[derive(Debug, Default)]
struct MemoryLogInner {
    objects: Vec<Bytes>,
    meta: std::collections::HashMap<String, Bytes>,
    meta_versions: std::collections::HashMap<String, u64>,
}

impl MemoryLog {
    pub fn new() -> MemoryLog {
        MemoryLog::default()
    }

    /// Entries appended so far.
    pub fn appended(&self) -> usize {
        self.inner.lock().objects.len()
    }
}

impl WalAppender for MemoryLog {
    fn reserve(&self, _bytes: usize) -> Result<(), DurableError> {
        Ok(())
    }

    fn append(&self, entry: AppendEntry) -> AppendAck {
        if let Some(external) = entry.external {
            // The bytes are already in another object (of a MemoryLog
            // shared by the nodes of a test).
            return Box::pin(std::future::ready(Ok(external)));
        }
        let mut joined = Vec::with_capacity(entry.len());
        for s in &entry.segments {
            joined.extend_from_slice(s);
        }
        let mut g = self.inner.lock();
        let idx = g.objects.len();
        let loc = Location {
            key: format!("mem/{idx}").into(),
            seq: idx as u64,
            node: 0,
            position: 0,
            len: entry.len() as u32,
            crc: crc32c::crc32c(&joined),
        };
        g.objects.push(joined.into());
        Box::pin(std::future::ready(Ok(loc)))
    }

    fn resume_partition(&self, _topic: &str, _partition: i32) {}

    fn handoff_append(&self, entry: AppendEntry) -> AppendAck {
        self.append(entry)
    }

    fn flush(&self) {}
}

impl BatchReader for MemoryLog {
    /// Objects in memory carry no owner: any of them may be handed off
    /// (the nodes of a test share one MemoryLog).
    fn is_handoff_object_of(&self, key: &str, _node: i32) -> bool {
        key.starts_with("mem/")
    }

    fn read_adjacent(&self, locations: Vec<Location>) -> ReadManyAck {
        // Every batch is an object of its own here.
        let g = self.inner.lock();
        let r = locations
            .iter()
            .map(|location| {
                location
                    .key
                    .strip_prefix("mem/")
                    .and_then(|i| i.parse::<usize>().ok())
                    .and_then(|i| g.objects.get(i).cloned())
                    .ok_or_else(|| DurableError::Unreadable {
                        key: location.key.to_string(),
                        reason: "no such object",
                    })
            })
            .collect();
        Box::pin(std::future::ready(r))
    }

    fn load_partitions(
        &self,
        _want: Vec<([u8; 16], i32)>,
    ) -> oneshot::Receiver<Result<LoadedPartitions, DurableError>> {
        // Memory is not indexed by partition: a partition taken over here
        // starts empty (tests start nodes before they create topics).
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(Ok(LoadedPartitions::new()));
        rx
    }
}

impl MetaStore for MemoryLog {
    fn put_meta(
        &self,
        name: &str,
        version: u64,
        data: Bytes,
    ) -> oneshot::Receiver<Result<(), DurableError>> {
        let (tx, rx) = oneshot::channel();
        let mut g = self.inner.lock();
        let last = g.meta_versions.entry(name.to_string()).or_insert(0);
        if version > *last {
            *last = version;
            g.meta.insert(name.to_string(), data);
        }
        let _ = tx.send(Ok(()));
        rx
    }

    fn get_meta(&self, name: &str) -> oneshot::Receiver<Result<Option<Bytes>, DurableError>> {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(Ok(self.inner.lock().meta.get(name).cloned()));
        rx
    }
}

impl ObjectLifecycle for MemoryLog {
    fn compact(
        &self,
        entries: Vec<AppendEntry>,
    ) -> oneshot::Receiver<Result<Vec<Location>, DurableError>> {
        // Each batch is already its own object here: a compacted copy is
        // another one, marked as compacted.
        let (tx, rx) = oneshot::channel();
        let mut g = self.inner.lock();
        let locations = entries
            .iter()
            .map(|entry| {
                let mut joined = Vec::with_capacity(entry.len());
                for s in &entry.segments {
                    joined.extend_from_slice(s);
                }
                let idx = g.objects.len();
                let loc = Location {
                    key: format!("mem/{idx}").into(),
                    seq: ferry_wal::compact::COMPACTED_SEQ,
                    node: 0,
                    position: 0,
                    len: entry.len() as u32,
                    crc: crc32c::crc32c(&joined),
                };
                g.objects.push(joined.into());
                loc
            })
            .collect();
        let _ = tx.send(Ok(locations));
        rx
    }

    fn delete_object(&self, _key: Arc<str>) -> oneshot::Receiver<Result<(), DurableError>> {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(Ok(()));
        rx
    }

    fn delete_node_objects(
        &self,
        _kind: ObjectKind,
        _node: u32,
        _below: u64,
        _min_age: std::time::Duration,
    ) -> oneshot::Receiver<Result<usize, DurableError>> {
        // Objects in memory are never deleted: the log lives as long as the
        // process.
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(Ok(0));
        rx
    }

    fn object_owners(
        &self,
        _kind: ObjectKind,
    ) -> oneshot::Receiver<Result<Vec<u32>, DurableError>> {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(Ok(Vec::new()));
        rx
    }
}

impl DurableLog for MemoryLog {
    fn render_metrics(&self) -> String {
        String::new()
    }
}

/// A batch in the log.
#[derive(Debug, Clone)]
pub struct LogBatch {
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    pub len: u32,
    /// The head and body, while cached.
    pub data: Option<[Bytes; 2]>,
    /// Where it lives in the bucket, once durable.
    pub location: Option<Location>,
    /// For a proxy's batch not durable here yet, the handoff object its
    /// bytes are in: it is in use from the moment it is appended.
    pub handoff: Option<Arc<str>>,
}

/// Producer state found with a recovered batch: id, epoch, first and last
/// sequence.
pub type RecoveredProducer = Option<(i64, i16, i32, i32)>;

/// What recovery found in the bucket, by partition.
pub type Recovered = std::collections::HashMap<(Arc<str>, i32), Vec<(LogBatch, RecoveredProducer)>>;

/// Partitions that recovery could not rebuild, by partition: the keys of the
/// unread (corrupt) objects their history may be in. They are not served
/// (KAFKA_STORAGE_ERROR) until the objects are read or their loss accepted
/// (`ferry.recovery.accept.lost.objects`).
pub type Blocked = std::collections::HashMap<(Arc<str>, i32), Vec<String>>;

/// Where an in-process cluster keeps `automq.zone.cidr.blocks` set at run
/// time (`meta/zone-cidrs`); it wins over the configured value at start.
pub const ZONE_CIDRS_META: &str = "zone-cidrs";

/// Where a node's committed offsets are kept: `meta/groups-<node id>`, one
/// object per node, since every node coordinates its own groups.
pub fn groups_meta_name(node_id: i32) -> String {
    format!("groups-{node_id}")
}
