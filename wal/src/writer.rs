//! The node-wide WAL writer.
//!
//! Every shard appends entries (record batches of the partitions it owns)
//! through a cloneable [`WalHandle`]. One batcher task on the WAL's I/O
//! runtime gathers them into ONE object per `batch_interval` (counted from
//! the first entry of the batch) or per `max_bytes_in_batch`, whichever comes
//! first, whatever the number of shards. It encodes the object, checks it,
//! and uploads it, retrying with exponential backoff until `upload_deadline`.
//!
//! # Guarantees
//!
//! - **Acknowledged means durable.** An entry's oneshot yields its
//!   [`WalLocation`] only after its object's PUT succeeded.
//! - **In order, per partition.** Up to `uploads_inflight_max` objects
//!   upload at once, and they may finish in any order. An entry is
//!   acknowledged when its own object and every earlier object holding an
//!   entry of the same partition are settled; an earlier object that holds
//!   only other partitions does not hold it back. So for every partition,
//!   acknowledged offsets have no holes, and a slow PUT delays only the
//!   partitions it carries.
//! - **A failure stops its partition.** When an object fails (after
//!   `upload_deadline`), its entries fail with [`WalError::UploadFailed`].
//!   Every other entry of those partitions that is not yet acknowledged, and
//!   every later append to them, fails with [`WalError::PartitionFailed`],
//!   until the owner rewinds the partition's log end to the first failed
//!   offset and calls [`WalHandle::resume_partition`]. Entries of other
//!   partitions are not affected. Objects that were uploaded but whose
//!   entries failed are not deleted: recovery recognises their entries as
//!   superseded or as past a gap (see `recovery.rs`).
//! - **Bounded memory.** Bytes appended and not yet completed never exceed
//!   `inflight_bytes_max`: `append` fails fast with the retriable
//!   [`WalError::Backpressure`] instead.
//! - **Every oneshot completes**, with a location or an error, unless the
//!   writer is dropped (a crash, as far as the bucket is concerned): then the
//!   pending receivers yield `Canceled`, and nothing of theirs was acknowledged.
//!
//! Objects are named `<prefix>/<node_id>/<seq:020>.wal`. The sequence number
//! continues from `WalConfig::first_seq`, which recovery provides, so it stays
//! increasing across restarts.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_channel::oneshot;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::{debug, error, warn};

use crate::error::WalError;
use crate::object::{IndexEntry, ObjectBuilder, ObjectHeader, WalEntry, FOOTER_LEN, HEADER_LEN};
use crate::reader::{object_key, WalReader};
use crate::runtime::{IoRuntime, IO_THREADS_MAX};
use crate::stats::WalStats;
use crate::store::{BATCH_INTERVAL_MS_MAX, MAX_BYTES_IN_BATCH_MAX};

/// Bytes charged against `inflight_bytes_max` per entry on top of its data,
/// topic and external key: the bookkeeping an entry costs while it waits.
pub const ENTRY_OVERHEAD_BYTES: usize = 128;
/// Most objects uploading at once that a config may ask for.
pub const UPLOADS_INFLIGHT_MAX_LIMIT: usize = 64;
/// Most commands the batcher handles before it looks at its timers again.
const COMMANDS_PER_TURN_MAX: usize = 1024;

/// The wall clock, as a parameter so tests can fix it. Only used for the
/// object header's creation time; timers use tokio time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// How the writer batches, bounds and retries.
#[derive(Debug, Clone)]
pub struct WalConfig {
    /// This node's `node.id`, written in every object header and key.
    pub node_id: u32,
    /// Key prefix; objects go to `<prefix>/<node_id>/<seq:020>.wal`.
    pub prefix: String,
    /// Longest an entry waits for its batch to be sealed (`batchInterval`).
    pub batch_interval: Duration,
    /// An object is sealed as soon as it reaches this size (`maxBytesInBatch`).
    pub max_bytes_in_batch: usize,
    /// Bound on bytes appended and not yet acknowledged, over all callers.
    pub inflight_bytes_max: usize,
    /// Objects uploading at once (uploads pipeline when a PUT takes longer
    /// than `batch_interval`).
    pub uploads_inflight_max: usize,
    /// How long an object's upload is retried before its entries fail.
    pub upload_deadline: Duration,
    /// First retry delay; doubles up to `retry_backoff_max`.
    pub retry_backoff_initial: Duration,
    pub retry_backoff_max: Duration,
    /// Sequence number of the first object (from `Recovery::next_seq`).
    pub first_seq: u64,
    /// Worker threads of the I/O runtime `WalWriter::start` creates.
    pub io_threads: usize,
    /// Creation time source for object headers.
    pub clock: Arc<dyn Clock>,
}

impl WalConfig {
    /// Defaults: prefix `wal`, 250 ms, 8 MiB per object, 64 MiB in flight,
    /// 4 uploads at once, 20 s deadline (under a producer's default 30 s
    /// request timeout), backoff 50 ms..2 s, 2 I/O threads.
    pub fn new(node_id: u32) -> WalConfig {
        WalConfig {
            node_id,
            prefix: "wal".to_string(),
            batch_interval: crate::store::BATCH_INTERVAL_DEFAULT,
            max_bytes_in_batch: crate::store::MAX_BYTES_IN_BATCH_DEFAULT,
            inflight_bytes_max: 64 * 1024 * 1024,
            uploads_inflight_max: 4,
            upload_deadline: Duration::from_secs(20),
            retry_backoff_initial: Duration::from_millis(50),
            retry_backoff_max: Duration::from_secs(2),
            first_seq: 0,
            io_threads: 2,
            clock: Arc::new(SystemClock),
        }
    }

    /// Checks every bound; the error names the field.
    pub fn validate(&self) -> Result<(), WalError> {
        let check = |ok: bool, param: &str, expected: String, found: String| {
            if ok {
                Ok(())
            } else {
                Err(WalError::config(param, expected, found))
            }
        };
        check(
            self.prefix
                .split('/')
                .all(|s| !s.is_empty() && s != "." && s != ".."),
            "prefix",
            "non-empty path segments separated by '/'".into(),
            self.prefix.clone(),
        )?;
        let ms = self.batch_interval.as_millis();
        check(
            (1..=u128::from(BATCH_INTERVAL_MS_MAX)).contains(&ms),
            "batch_interval",
            format!("1..={BATCH_INTERVAL_MS_MAX} ms"),
            format!("{ms} ms"),
        )?;
        check(
            (1..=MAX_BYTES_IN_BATCH_MAX).contains(&self.max_bytes_in_batch),
            "max_bytes_in_batch",
            format!("1..={MAX_BYTES_IN_BATCH_MAX}"),
            self.max_bytes_in_batch.to_string(),
        )?;
        check(
            self.inflight_bytes_max >= 1,
            "inflight_bytes_max",
            "at least 1".into(),
            self.inflight_bytes_max.to_string(),
        )?;
        check(
            (1..=UPLOADS_INFLIGHT_MAX_LIMIT).contains(&self.uploads_inflight_max),
            "uploads_inflight_max",
            format!("1..={UPLOADS_INFLIGHT_MAX_LIMIT}"),
            self.uploads_inflight_max.to_string(),
        )?;
        check(
            !self.upload_deadline.is_zero(),
            "upload_deadline",
            "more than zero".into(),
            format!("{:?}", self.upload_deadline),
        )?;
        check(
            !self.retry_backoff_initial.is_zero()
                && self.retry_backoff_max >= self.retry_backoff_initial,
            "retry_backoff_initial/retry_backoff_max",
            "0 < initial <= max".into(),
            format!(
                "{:?}/{:?}",
                self.retry_backoff_initial, self.retry_backoff_max
            ),
        )?;
        check(
            (1..=IO_THREADS_MAX).contains(&self.io_threads),
            "io_threads",
            format!("1..={IO_THREADS_MAX}"),
            self.io_threads.to_string(),
        )
    }
}

/// Where an acknowledged entry is: enough to read it back with one ranged
/// GET and check it.
///
/// For an external entry, `key`, `position`, `len` and `crc` name the bytes
/// in the external object (the proxy's handoff object), while `seq` is
/// still the sequence number of the WAL object holding the index entry: the
/// WAL object must be kept while the batch is read from there, since it is
/// what records the offsets. An epoch marker's location has `len` 0, in its
/// WAL object.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WalLocation {
    /// The key of the object holding the bytes.
    pub key: Arc<str>,
    /// The sequence number of the WAL object holding the index entry.
    pub seq: u64,
    /// The node whose WAL object `seq` is (the writer of the index entry).
    pub node: u32,
    /// Position of the entry's data in the object.
    pub position: u64,
    /// Length of the entry's data.
    pub len: u32,
    /// CRC32C of the entry's data.
    pub crc: u32,
}

impl WalLocation {
    /// Where the bytes of `entry`, an index entry of WAL object `key`
    /// (sequence `seq`), are: in that object, or for an external entry, in
    /// the external object.
    pub fn of_entry(key: &Arc<str>, node: u32, seq: u64, entry: &IndexEntry) -> WalLocation {
        match &entry.external {
            Some(ext) => WalLocation {
                key: ext.key.clone(),
                seq,
                node,
                position: ext.position,
                len: ext.len,
                crc: ext.crc,
            },
            None => WalLocation {
                key: key.clone(),
                seq,
                node,
                position: entry.position,
                len: entry.len,
                crc: entry.crc,
            },
        }
    }

    /// The byte range of the entry's data in the object.
    pub fn range(&self) -> Range<u64> {
        self.position..self.position + u64::from(self.len)
    }

    /// The object key as an object store path.
    pub fn path(&self) -> Path {
        Path::from(&*self.key)
    }
}

/// What an `append` resolves to.
pub type AppendResult = Result<WalLocation, WalError>;

/// The running writer. Dropping it stops it at once, like a crash: nothing
/// pending is uploaded or acknowledged. Use [`WalWriter::shutdown`] to stop
/// after everything appended is settled.
#[derive(Debug)]
pub struct WalWriter {
    handle: WalHandle,
    io: IoRuntime,
    store: Arc<dyn ObjectStore>,
    task: JoinHandle<()>,
}

impl Drop for WalWriter {
    fn drop(&mut self) {
        // Aborting the batcher drops its JoinSet, which aborts every upload.
        self.task.abort();
    }
}

impl WalWriter {
    /// Starts a writer on its own I/O runtime of `config.io_threads` threads.
    pub fn start(store: Arc<dyn ObjectStore>, config: WalConfig) -> Result<WalWriter, WalError> {
        config.validate()?;
        let io = IoRuntime::new(config.io_threads)?;
        WalWriter::start_on(&io, store, config)
    }

    /// Starts a writer on an existing I/O runtime (shared with a reader, or
    /// the one recovery ran on). `config.io_threads` is not used.
    pub fn start_on(
        io: &IoRuntime,
        store: Arc<dyn ObjectStore>,
        config: WalConfig,
    ) -> Result<WalWriter, WalError> {
        config.validate()?;
        let stats = Arc::new(WalStats::default());
        let shared = Arc::new(Shared {
            stats,
            inflight_bytes_max: config.inflight_bytes_max,
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let batcher = Batcher {
            slots: Arc::new(Semaphore::new(config.uploads_inflight_max)),
            next_seq: config.first_seq,
            cfg: config,
            store: store.clone(),
            shared: shared.clone(),
            rx,
            rx_closed: false,
            stopping: false,
            batch: Vec::new(),
            batch_bytes: 0,
            batch_deadline: None,
            inflight: BTreeMap::new(),
            uploads: JoinSet::new(),
            upload_seqs: HashMap::new(),
            failed_partitions: HashMap::new(),
            flush_waiters: Vec::new(),
        };
        let task = io.handle().spawn(batcher.run());
        Ok(WalWriter {
            handle: WalHandle { tx, shared },
            io: io.clone(),
            store,
            task,
        })
    }

    /// A handle for appending, cheap to clone, usable from any thread.
    pub fn handle(&self) -> WalHandle {
        self.handle.clone()
    }

    /// The writer's counters.
    pub fn stats(&self) -> Arc<WalStats> {
        self.handle.shared.stats.clone()
    }

    /// The I/O runtime the writer runs on.
    pub fn io(&self) -> &IoRuntime {
        &self.io
    }

    /// A reader on the same runtime and store, counting into the same stats.
    pub fn reader(&self) -> WalReader {
        WalReader::with_stats(self.io.clone(), self.store.clone(), self.stats())
    }

    /// Seals what is pending, waits up to `timeout` until every appended
    /// entry is settled, then stops. Blocks the calling thread: call it at
    /// node shutdown, not from a shard that is still serving, and not from
    /// inside a tokio runtime.
    ///
    /// Appends that reach the writer after this call fail with
    /// [`WalError::Closed`]. If `timeout` passes first, the writer is stopped
    /// anyway, and entries still uploading yield `Canceled`.
    pub fn shutdown(mut self, timeout: Duration) -> Result<(), WalError> {
        let flushed = self.handle.flush();
        let _ = self.handle.tx.send(Command::Stop);
        let task = &mut self.task;
        // Timers must be made inside the runtime, so build them in the future.
        let waited = self.io.block_on(async move {
            tokio::time::timeout(timeout, async move {
                let flushed = flushed.await;
                let _ = task.await;
                flushed
            })
            .await
        });
        match waited {
            Ok(Ok(result)) => result,
            Ok(Err(oneshot::Canceled)) => Err(WalError::Closed),
            Err(_) => Err(WalError::TimedOut {
                op: "WAL shutdown",
                timeout_ms: timeout.as_millis() as u64,
            }),
        }
    }
}

/// A cloneable, `Send + Sync` handle to the writer. Its methods never block
/// and need no async runtime: the results come back on `futures_channel`
/// oneshots, which glommio (or anything else) can await.
#[derive(Debug, Clone)]
pub struct WalHandle {
    tx: mpsc::UnboundedSender<Command>,
    shared: Arc<Shared>,
}

impl WalHandle {
    /// Queues `entry` for the next object. The receiver yields its location
    /// once the object is durable, or an error: at once for
    /// [`WalError::Backpressure`], [`WalError::InvalidEntry`],
    /// [`WalError::PartitionFailed`] and [`WalError::Closed`].
    ///
    /// Entries of one partition must be appended in offset order; the
    /// writer keeps that order inside the object.
    pub fn append(&self, entry: WalEntry) -> oneshot::Receiver<AppendResult> {
        let (tx, rx) = oneshot::channel();
        if let Err(reason) = entry.check() {
            let _ = tx.send(Err(WalError::InvalidEntry {
                topic: entry.topic.to_string(),
                partition: entry.partition,
                reason,
            }));
            return rx;
        }
        let bytes = entry.data_len()
            + entry.topic.len()
            + entry.external.as_ref().map_or(0, |x| x.key.len())
            + ENTRY_OVERHEAD_BYTES;
        let charge = match Charge::take(&self.shared, bytes) {
            Ok(c) => c,
            Err(e) => {
                let e = match e {
                    WalError::InvalidEntry { reason, .. } => WalError::InvalidEntry {
                        topic: entry.topic.to_string(),
                        partition: entry.partition,
                        reason,
                    },
                    other => other,
                };
                // Later entries of this partition carry later offsets: they
                // must fail too until the owner rewinds and resumes, or the
                // partition's acknowledged offsets would have a hole.
                let _ = self
                    .tx
                    .send(Command::Reject(entry.topic.clone(), entry.partition));
                let _ = tx.send(Err(e));
                return rx;
            }
        };
        if let Err(mpsc::error::SendError(Command::Append(p))) =
            self.tx.send(Command::Append(Pending {
                entry,
                tx,
                charge,
                appended: Instant::now(),
            }))
        {
            drop(p.charge);
            let _ = p.tx.send(Err(WalError::Closed));
        }
        rx
    }

    /// Seals the pending batch now. The receiver yields once every entry
    /// appended before this call is settled (acknowledged or failed).
    pub fn flush(&self) -> oneshot::Receiver<Result<(), WalError>> {
        let (tx, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError(Command::Flush(tx))) = self.tx.send(Command::Flush(tx)) {
            let _ = tx.send(Err(WalError::Closed));
        }
        rx
    }

    /// Lets appends to a failed partition through again. Call it after
    /// rewinding the partition's log end to its first failed offset; appends
    /// made after this call are accepted, earlier ones are not.
    pub fn resume_partition(&self, topic: &str, partition: i32) {
        let _ = self.tx.send(Command::Resume(Arc::from(topic), partition));
    }

    /// Bytes appended and not yet settled.
    pub fn inflight_bytes(&self) -> u64 {
        self.shared.stats.inflight_bytes.load(Ordering::Relaxed)
    }

    /// The writer's counters.
    pub fn stats(&self) -> &WalStats {
        &self.shared.stats
    }
}

#[derive(Debug)]
struct Shared {
    /// `stats.inflight_bytes` is the in-flight byte count itself.
    stats: Arc<WalStats>,
    inflight_bytes_max: usize,
}

/// Bytes counted against `inflight_bytes_max`, given back on drop.
#[derive(Debug)]
struct Charge {
    shared: Arc<Shared>,
    bytes: u64,
}

impl Charge {
    fn take(shared: &Arc<Shared>, bytes: usize) -> Result<Charge, WalError> {
        let max = shared.inflight_bytes_max as u64;
        let want = bytes as u64;
        if want > max {
            return Err(WalError::InvalidEntry {
                topic: String::new(),
                partition: -1,
                reason: format!("{bytes} bytes is more than inflight_bytes_max={max}"),
            });
        }
        let counter = &shared.stats.inflight_bytes;
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                (cur + want <= max).then_some(cur + want)
            })
            .map_err(|cur| {
                WalStats::add(&shared.stats.backpressure_rejections, 1);
                WalError::Backpressure {
                    inflight_bytes: cur as usize,
                    requested_bytes: bytes,
                    inflight_bytes_max: max as usize,
                }
            })?;
        Ok(Charge {
            shared: shared.clone(),
            bytes: want,
        })
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.shared
            .stats
            .inflight_bytes
            .fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[derive(Debug)]
enum Command {
    Append(Pending),
    Flush(oneshot::Sender<Result<(), WalError>>),
    Resume(Arc<str>, i32),
    /// An append of this partition was refused before it was queued: fail
    /// the partition's later appends until it is resumed. Entries accepted
    /// before it hold earlier offsets and go on.
    Reject(Arc<str>, i32),
    /// Refuse new appends; stop once everything accepted is settled.
    Stop,
}

/// An appended entry not yet in a sealed object.
#[derive(Debug)]
struct Pending {
    entry: WalEntry,
    tx: oneshot::Sender<AppendResult>,
    charge: Charge,
    appended: Instant,
}

/// An entry in a sealed object, waiting for the object's outcome. Its data
/// lives on in the upload payload only.
#[derive(Debug)]
struct Waiter {
    topic: Arc<str>,
    partition: i32,
    location: WalLocation,
    tx: oneshot::Sender<AppendResult>,
    charge: Charge,
}

/// Gives the bytes back, then sends the outcome (so a caller that appends
/// again as soon as it hears back finds the room).
fn settle(
    tx: oneshot::Sender<AppendResult>,
    charge: Charge,
    stats: &WalStats,
    result: AppendResult,
) {
    drop(charge);
    let counter = if result.is_ok() {
        &stats.entries_acked
    } else {
        &stats.entries_failed
    };
    WalStats::add(counter, 1);
    let _ = tx.send(result);
}

#[derive(Debug)]
struct InFlight {
    key: Arc<str>,
    len: u64,
    waiters: Vec<Waiter>,
    outcome: Option<Result<(), WalError>>,
    sealed: Instant,
    /// When the outcome came.
    settled: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
enum SealReason {
    Interval,
    Size,
    Flush,
}

type PartitionKey = (Arc<str>, i32);

struct Batcher {
    cfg: WalConfig,
    store: Arc<dyn ObjectStore>,
    shared: Arc<Shared>,
    rx: mpsc::UnboundedReceiver<Command>,
    /// No command can arrive any more.
    rx_closed: bool,
    /// `Stop` was received: appends are refused.
    stopping: bool,
    /// Entries of the batch being gathered, in append order.
    batch: Vec<Pending>,
    /// Object bytes the batch's entries will take (data plus index).
    batch_bytes: usize,
    /// When the batch must be sealed: `batch_interval` after its first entry.
    batch_deadline: Option<Instant>,
    next_seq: u64,
    /// Sealed objects not yet completed, by sequence number.
    inflight: BTreeMap<u64, InFlight>,
    uploads: JoinSet<Result<(), WalError>>,
    upload_seqs: HashMap<tokio::task::Id, u64>,
    slots: Arc<Semaphore>,
    /// Partitions with a failed entry, and the object it was in.
    failed_partitions: HashMap<PartitionKey, Arc<str>>,
    /// Flushes waiting until every object below the sequence number is settled.
    flush_waiters: Vec<(u64, oneshot::Sender<Result<(), WalError>>)>,
}

impl Batcher {
    async fn run(mut self) {
        loop {
            if self.rx_closed && self.batch.is_empty() && self.inflight.is_empty() {
                debug!(node = self.cfg.node_id, "WAL writer stopped");
                return;
            }
            let deadline = self.batch_deadline;
            tokio::select! {
                biased;
                Some(joined) = self.uploads.join_next_with_id(), if !self.uploads.is_empty() => {
                    self.on_upload_done(joined);
                }
                () = sleep_until_opt(deadline), if deadline.is_some() => {
                    self.seal(SealReason::Interval);
                }
                cmd = self.rx.recv(), if !self.rx_closed => match cmd {
                    Some(cmd) => {
                        self.handle(cmd);
                        for _ in 0..COMMANDS_PER_TURN_MAX {
                            match self.rx.try_recv() {
                                Ok(cmd) => self.handle(cmd),
                                Err(_) => break,
                            }
                        }
                    }
                    None => {
                        self.rx_closed = true;
                        self.seal(SealReason::Flush);
                    }
                },
            }
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Append(p) if self.stopping => {
                settle(p.tx, p.charge, &self.shared.stats, Err(WalError::Closed));
            }
            Command::Append(p) => self.append(p),
            Command::Stop => {
                self.stopping = true;
                // Later sends fail at once; what is queued is drained.
                self.rx.close();
                self.seal(SealReason::Flush);
            }
            Command::Flush(tx) => {
                self.seal(SealReason::Flush);
                self.flush_waiters.push((self.next_seq, tx));
                self.settle_flushes();
            }
            Command::Reject(topic, partition) => {
                self.failed_partitions
                    .entry((topic, partition))
                    .or_insert_with(|| Arc::from("(refused before upload)"));
            }
            Command::Resume(topic, partition) => {
                if self
                    .failed_partitions
                    .remove(&(topic.clone(), partition))
                    .is_some()
                {
                    debug!(topic = &*topic, partition, "WAL partition resumed");
                }
            }
        }
    }

    fn append(&mut self, p: Pending) {
        if !self.failed_partitions.is_empty() {
            let key = (p.entry.topic.clone(), p.entry.partition);
            if let Some(failed_key) = self.failed_partitions.get(&key) {
                let err = partition_failed(&key, failed_key);
                settle(p.tx, p.charge, &self.shared.stats, Err(err));
                return;
            }
        }
        let bytes = p.entry.data_len() + p.entry.index_entry_len();
        let fixed = HEADER_LEN + 4 + FOOTER_LEN;
        if !self.batch.is_empty() && fixed + self.batch_bytes + bytes > self.cfg.max_bytes_in_batch
        {
            self.seal(SealReason::Size);
        }
        if self.batch.is_empty() {
            self.batch_deadline = Some(Instant::now() + self.cfg.batch_interval);
        }
        self.batch.push(p);
        self.batch_bytes += bytes;
        if fixed + self.batch_bytes >= self.cfg.max_bytes_in_batch {
            self.seal(SealReason::Size);
        }
    }

    /// Turns the batch into an object and starts its upload.
    fn seal(&mut self, reason: SealReason) {
        self.batch_deadline = None;
        if self.batch.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        let stats = &self.shared.stats;
        let sealed = Instant::now();
        for p in &pending {
            stats.wait_interval.record(sealed - p.appended);
        }
        WalStats::add(
            match reason {
                SealReason::Interval => &stats.sealed_by_interval,
                SealReason::Size => &stats.sealed_by_size,
                SealReason::Flush => &stats.sealed_by_flush,
            },
            1,
        );
        let seq = self.next_seq;
        self.next_seq += 1;
        let path = object_key(&self.cfg.prefix, self.cfg.node_id, seq);
        let key: Arc<str> = Arc::from(path.as_ref());

        // Group by partition (in order of first appearance, append order
        // within a partition) so one ranged GET reads a partition's bytes.
        let mut group_of: HashMap<PartitionKey, usize> = HashMap::new();
        let mut groups: Vec<Vec<Pending>> = Vec::new();
        for p in pending {
            let g = *group_of
                .entry((p.entry.topic.clone(), p.entry.partition))
                .or_insert_with(|| {
                    groups.push(Vec::new());
                    groups.len() - 1
                });
            groups[g].push(p);
        }

        let mut builder = ObjectBuilder::new(ObjectHeader {
            node_id: self.cfg.node_id,
            seq,
            created_ms: self.cfg.clock.now_ms(),
        });
        let mut waiters = Vec::new();
        let mut build_error = None;
        for p in groups.into_iter().flatten() {
            match builder.push(&p.entry) {
                Ok(ie) => waiters.push(Waiter {
                    location: WalLocation::of_entry(&key, self.cfg.node_id, seq, ie),
                    topic: p.entry.topic,
                    partition: p.entry.partition,
                    tx: p.tx,
                    charge: p.charge,
                }),
                Err(e) => {
                    // `append` checked the entry, so this is a bug; fail the
                    // entry, and through `build_error` its whole object.
                    error!(object_key = &*key, error = %e, "WAL entry did not fit the object format");
                    waiters.push(Waiter {
                        location: WalLocation {
                            key: key.clone(),
                            seq,
                            node: self.cfg.node_id,
                            position: 0,
                            len: 0,
                            crc: 0,
                        },
                        topic: p.entry.topic,
                        partition: p.entry.partition,
                        tx: p.tx,
                        charge: p.charge,
                    });
                    build_error.get_or_insert(e);
                }
            }
        }
        let encoded = match build_error {
            Some(e) => Err(e),
            None => builder.finish().and_then(|obj| obj.verify().map(|()| obj)),
        };
        let (len, outcome) = match encoded {
            Ok(obj) => {
                let len = obj.len();
                let payload = obj.payload();
                let id = self
                    .uploads
                    .spawn(upload(
                        self.store.clone(),
                        path,
                        payload,
                        UploadPolicy::from(&self.cfg),
                        self.shared.stats.clone(),
                        self.slots.clone(),
                        seq,
                    ))
                    .id();
                self.upload_seqs.insert(id, seq);
                debug!(
                    object_key = &*key,
                    bytes = len,
                    entries = waiters.len(),
                    ?reason,
                    "WAL object sealed"
                );
                (len, None)
            }
            Err(e) => {
                error!(object_key = &*key, error = %e, "WAL object failed its check before upload");
                (0, Some(Err(WalError::corrupt(&*key, e))))
            }
        };
        self.inflight.insert(
            seq,
            InFlight {
                key,
                len,
                waiters,
                settled: outcome.as_ref().map(|_| sealed),
                outcome,
                sealed,
            },
        );
        self.complete();
    }

    fn on_upload_done(
        &mut self,
        joined: Result<(tokio::task::Id, Result<(), WalError>), tokio::task::JoinError>,
    ) {
        let (id, outcome) = match joined {
            Ok((id, outcome)) => (id, outcome),
            Err(e) => {
                let outcome = Err(WalError::store(
                    "upload task",
                    "",
                    object_store::Error::Generic {
                        store: "ferry-wal",
                        source: format!("upload task ended abnormally: {e}").into(),
                    },
                ));
                (e.id(), outcome)
            }
        };
        let Some(seq) = self.upload_seqs.remove(&id) else {
            error!(task = %id, "WAL upload finished for an unknown task");
            return;
        };
        if let Some(obj) = self.inflight.get_mut(&seq) {
            let now = Instant::now();
            if outcome.is_ok() {
                WalStats::add(&self.shared.stats.objects_uploaded, 1);
                WalStats::add(&self.shared.stats.bytes_uploaded, obj.len);
                for _ in &obj.waiters {
                    self.shared.stats.put.record(now - obj.sealed);
                }
            }
            obj.outcome = Some(outcome);
            obj.settled = Some(now);
        }
        self.complete();
    }

    /// Settles every entry that may be settled: walking the objects from
    /// the lowest sequence number up, an entry of a settled object gets its
    /// object's outcome unless an earlier object still holds an unsettled
    /// entry of its partition (then it waits, and so does every later entry
    /// of that partition). A failure fails the partition's later entries
    /// too. Objects left with no waiter are dropped once settled.
    fn complete(&mut self) {
        let stats = self.shared.stats.clone();
        let now = Instant::now();
        let mut held: std::collections::HashSet<PartitionKey> = Default::default();
        let mut failed_any = false;
        let mut failed_now: HashMap<PartitionKey, Arc<str>> = HashMap::new();
        for obj in self.inflight.values_mut() {
            if obj.waiters.is_empty() {
                continue;
            }
            let waiters = std::mem::take(&mut obj.waiters);
            for w in waiters {
                let key = (w.topic.clone(), w.partition);
                // An earlier entry of the partition failed in this pass:
                // this one holds later offsets, so it fails too.
                if let Some(failed_key) = failed_now.get(&key) {
                    let err = partition_failed(&key, failed_key);
                    settle(w.tx, w.charge, &stats, Err(err));
                    continue;
                }
                let free = held.is_empty() || !held.contains(&key);
                match (&obj.outcome, free) {
                    (Some(Ok(())), true) => {
                        if let Some(durable) = obj.settled {
                            stats
                                .wait_earlier
                                .record(now.saturating_duration_since(durable));
                        }
                        settle(w.tx, w.charge, &stats, Ok(w.location));
                    }
                    (Some(Err(e)), true) => {
                        self.failed_partitions.insert(key.clone(), obj.key.clone());
                        failed_now.insert(key, obj.key.clone());
                        settle(w.tx, w.charge, &stats, Err(e.clone()));
                        failed_any = true;
                    }
                    _ => {
                        held.insert(key);
                        obj.waiters.push(w);
                    }
                }
            }
        }
        self.inflight.retain(|seq, obj| {
            let done = obj.outcome.is_some() && obj.waiters.is_empty();
            if done {
                if let Some(Err(e)) = &obj.outcome {
                    WalStats::add(&stats.objects_failed, 1);
                    error!(node = self.cfg.node_id, seq, object_key = &*obj.key, error = %e,
                        "WAL object failed; its partitions stop until resumed");
                }
            }
            !done
        });
        if failed_any {
            self.fail_entries_of_failed_partitions();
        }
        self.settle_flushes();
    }

    /// Fails every unacknowledged entry of a failed partition, in later
    /// objects and in the batch being gathered. Their bytes are given back
    /// at once, while a later object still uploading keeps holding its
    /// payload until its upload ends (within `upload_deadline`).
    fn fail_entries_of_failed_partitions(&mut self) {
        let stats = self.shared.stats.clone();
        let failed = &self.failed_partitions;
        let failed_key =
            |topic: &Arc<str>, partition: i32| failed.get(&(topic.clone(), partition)).cloned();
        for obj in self.inflight.values_mut() {
            let waiters = std::mem::take(&mut obj.waiters);
            for w in waiters {
                match failed_key(&w.topic, w.partition) {
                    Some(k) => {
                        let err = partition_failed(&(w.topic.clone(), w.partition), &k);
                        settle(w.tx, w.charge, &stats, Err(err));
                    }
                    None => obj.waiters.push(w),
                }
            }
        }
        let batch = std::mem::take(&mut self.batch);
        let mut kept_bytes = 0;
        for p in batch {
            match failed_key(&p.entry.topic, p.entry.partition) {
                Some(k) => {
                    let err = partition_failed(&(p.entry.topic.clone(), p.entry.partition), &k);
                    settle(p.tx, p.charge, &stats, Err(err));
                }
                None => {
                    kept_bytes += p.entry.data_len() + p.entry.index_entry_len();
                    self.batch.push(p);
                }
            }
        }
        self.batch_bytes = kept_bytes;
        if self.batch.is_empty() {
            self.batch_deadline = None;
        }
    }

    fn settle_flushes(&mut self) {
        let lowest_open = self
            .inflight
            .keys()
            .next()
            .copied()
            .unwrap_or(self.next_seq);
        let mut i = 0;
        while i < self.flush_waiters.len() {
            if self.flush_waiters[i].0 <= lowest_open {
                let (_, tx) = self.flush_waiters.swap_remove(i);
                let _ = tx.send(Ok(()));
            } else {
                i += 1;
            }
        }
    }
}

fn partition_failed(key: &PartitionKey, failed_key: &Arc<str>) -> WalError {
    WalError::PartitionFailed {
        topic: key.0.to_string(),
        partition: key.1,
        failed_key: failed_key.to_string(),
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[derive(Debug, Clone, Copy)]
struct UploadPolicy {
    deadline: Duration,
    backoff_initial: Duration,
    backoff_max: Duration,
}

impl From<&WalConfig> for UploadPolicy {
    fn from(c: &WalConfig) -> Self {
        UploadPolicy {
            deadline: c.upload_deadline,
            backoff_initial: c.retry_backoff_initial,
            backoff_max: c.retry_backoff_max,
        }
    }
}

/// PUTs one object, retrying with exponential backoff (jittered) until the
/// deadline. Each attempt is itself bounded by the time left.
async fn upload(
    store: Arc<dyn ObjectStore>,
    path: Path,
    payload: PutPayload,
    policy: UploadPolicy,
    stats: Arc<WalStats>,
    slots: Arc<Semaphore>,
    seq: u64,
) -> Result<(), WalError> {
    let _slot = slots.acquire_owned().await.map_err(|_| WalError::Closed)?;
    let started = Instant::now();
    let mut backoff = policy.backoff_initial;
    let mut attempts: u32 = 0;
    loop {
        attempts += 1;
        WalStats::add(&stats.put_requests, 1);
        let left = policy.deadline.saturating_sub(started.elapsed());
        let err = match tokio::time::timeout(left, store.put(&path, payload.clone())).await {
            Ok(Ok(_)) => {
                stats.record_upload_latency(started.elapsed());
                return Ok(());
            }
            Ok(Err(e)) => e,
            Err(_) => object_store::Error::Generic {
                store: "ferry-wal",
                source: format!(
                    "PUT still running after {} ms, at the upload deadline",
                    left.as_millis()
                )
                .into(),
            },
        };
        WalStats::add(&stats.put_errors, 1);
        let elapsed = started.elapsed();
        let wait = jitter(backoff, seq, attempts);
        if elapsed + wait >= policy.deadline {
            return Err(WalError::UploadFailed {
                key: path.to_string(),
                attempts,
                elapsed_ms: elapsed.as_millis() as u64,
                source: Arc::new(err),
            });
        }
        warn!(object_key = %path, attempt = attempts, retry_in_ms = wait.as_millis() as u64,
            error = %err, "WAL PUT failed; retrying");
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(policy.backoff_max);
    }
}

/// A delay in [backoff/2, backoff], spread by a hash of the object and the
/// attempt, so nodes that failed together do not retry together.
pub(crate) fn jitter(backoff: Duration, seq: u64, attempt: u32) -> Duration {
    let mut x = seq ^ (u64::from(attempt) << 48) ^ 0x9E37_79B9_7F4A_7C15;
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    let half = backoff / 2;
    half + Duration::from_nanos(x % (half.as_nanos() as u64 + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_half_and_full_backoff() {
        let b = Duration::from_millis(100);
        for seq in 0..50 {
            for attempt in 1..5 {
                let j = jitter(b, seq, attempt);
                assert!(j >= b / 2 && j <= b, "{j:?}");
            }
        }
        assert_ne!(jitter(b, 1, 1), jitter(b, 2, 1));
    }

    #[test]
    fn config_validation_names_the_field() {
        let mut c = WalConfig::new(1);
        c.validate().unwrap();
        c.uploads_inflight_max = 0;
        let err = c.validate().unwrap_err();
        assert!(
            matches!(&err, WalError::Config { param, .. } if param == "uploads_inflight_max"),
            "{err}"
        );
        let mut c = WalConfig::new(1);
        c.prefix = "wal//x".into();
        assert!(matches!(c.validate(), Err(WalError::Config { param, .. }) if param == "prefix"));
        let mut c = WalConfig::new(1);
        c.batch_interval = Duration::ZERO;
        assert!(
            matches!(c.validate(), Err(WalError::Config { param, .. }) if param == "batch_interval")
        );
    }

    #[test]
    fn charges_are_bounded_and_given_back() {
        let shared = Arc::new(Shared {
            stats: Arc::new(WalStats::default()),
            inflight_bytes_max: 1000,
        });
        let a = Charge::take(&shared, 600).unwrap();
        let err = Charge::take(&shared, 600).unwrap_err();
        assert!(matches!(
            err,
            WalError::Backpressure {
                inflight_bytes: 600,
                requested_bytes: 600,
                inflight_bytes_max: 1000
            }
        ));
        assert!(err.is_retriable());
        assert!(matches!(
            Charge::take(&shared, 1001),
            Err(WalError::InvalidEntry { .. })
        ));
        drop(a);
        assert_eq!(shared.stats.inflight_bytes.load(Ordering::Relaxed), 0);
        let _b = Charge::take(&shared, 1000).unwrap();
        assert_eq!(shared.stats.snapshot().backpressure_rejections, 1);
    }
}
