//! The durable log over the `ferry-wal` writer: WAL objects in the bucket,
//! metadata objects (`meta/<name>`) beside them, and recovery at start-up.

use crate::cluster::topics::TopicTable;
use crate::prom::{Exposition, Kind};
use crate::storage::durable::{
    AppendAck, AppendEntry, BatchReader, DurableError, DurableLog, MetaStore, ObjectLifecycle,
    ReadManyAck, WalAppender,
};
use crate::storage::durable::{LogBatch, Recovered};
use bytes::Bytes;
use ferry_wal::{
    compact, recovery, IoRuntime, WalConfig, WalEntry, WalError, WalHandle, WalReader, WalWriter,
};
use futures_channel::oneshot;
use object_store::{path::Path, ObjectStore, ObjectStoreExt, PutPayload};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// Where WAL objects go in the bucket.
pub const WAL_PREFIX: &str = "wal";

pub struct WalLog {
    writer: parking_lot::Mutex<Option<WalWriter>>,
    handle: WalHandle,
    /// The handoff writer: batches this node forwards as a proxy.
    handoff_writer: parking_lot::Mutex<Option<WalWriter>>,
    handoff: WalHandle,
    reader: WalReader,
    io: IoRuntime,
    store: Arc<dyn ObjectStore>,
    inflight_bytes_max: usize,
    node_id: u32,
    /// Per metadata name: the last version written, held while writing.
    meta_written:
        parking_lot::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<u64>>>>,
    objects_deleted: Arc<std::sync::atomic::AtomicU64>,
    handoff_deleted: Arc<std::sync::atomic::AtomicU64>,
    /// The WAL objects' indexes read by earlier takeovers.
    indexes: Arc<recovery::IndexCache>,
    compacted_deleted: Arc<std::sync::atomic::AtomicU64>,
    stats: Arc<ferry_wal::WalStats>,
    /// `ferry.recovery.accept.lost.objects`.
    accept_lost: Arc<Vec<String>>,
    store_stats: Option<Arc<ferry_wal::StoreStats>>,
}

/// The wall-clock time `age` ago, in object_store's timestamp type.
/// What opening the log found in the bucket.
pub struct Opened {
    pub log: Arc<WalLog>,
    pub topics: TopicTable,
    /// The committed-offsets snapshot (`meta/groups`), if one was written.
    pub groups: Option<Bytes>,
    /// `automq.zone.cidr.blocks` as last set at run time in an in-process
    /// cluster (`meta/zone-cidrs`), if it was.
    pub zone_cidrs: Option<String>,
    pub recovered: Recovered,
    /// Partitions that could not be rebuilt: their history may be in an
    /// object that is corrupt (see `ferry_wal::recovery::unread_blocks`).
    /// They are not served; their entries in `recovered` only keep their
    /// objects referenced.
    pub blocked: crate::storage::durable::Blocked,
    pub objects_read: u64,
    pub batches: usize,
}

/// How start-up recovery treats the bucket's errors, and what else the
/// log reports.
#[derive(Debug, Clone, Default)]
pub struct RecoveryOptions {
    /// `ferry.recovery.accept.lost.objects`: keys of objects the operator
    /// has declared lost. They block no partition; the partitions are
    /// rebuilt without them (and each use is logged as an error).
    pub accept_lost: Vec<String>,
    /// The counters of the [`ferry_wal::HedgedStore`] the store is wrapped
    /// in, if it is: shown in `/metrics`.
    pub store_stats: Option<Arc<ferry_wal::StoreStats>>,
}

/// The longest wait between two attempts of start-up recovery.
const RECOVERY_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Whether a store error at start-up is worth waiting out: anything but a
/// refusal that no retry can change (credentials, permissions, an API the
/// store does not have), which stops the start with a clear error.
fn worth_retrying(e: &WalError) -> bool {
    match e {
        WalError::Store { source, .. } => !matches!(
            **source,
            object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
                | object_store::Error::NotImplemented { .. }
                | object_store::Error::NotSupported { .. }
        ),
        other => other.is_retriable(),
    }
}

/// The CRC32C of a whole record batch given as segments, from the batch's
/// own CRC (which covers its bytes from `attributes`, offset 21, to the
/// end) and the 21 bytes before it, without reading the rest: `None` if the
/// segments are not exactly one magic-2 batch. Every batch a log holds had
/// its CRC checked when it came in (produce), or was read back from an
/// object whose CRC covers it, or was built here; so the field is right.
fn batch_crc(segments: &[Bytes]) -> Option<u32> {
    const CRC_COVERS_FROM: usize = 21;
    let total: usize = segments.iter().map(Bytes::len).sum();
    let mut head = [0u8; CRC_COVERS_FROM];
    let mut at = 0;
    for s in segments {
        let take = (CRC_COVERS_FROM - at).min(s.len());
        head[at..at + take].copy_from_slice(&s[..take]);
        at += take;
        if at == CRC_COVERS_FROM {
            break;
        }
    }
    let batch_length = i32::from_be_bytes([head[8], head[9], head[10], head[11]]);
    let one_batch = at == CRC_COVERS_FROM
        && head[16] == 2
        && usize::try_from(batch_length).is_ok_and(|l| l + 12 == total);
    if !one_batch {
        return None;
    }
    let kafka_crc = u32::from_be_bytes([head[17], head[18], head[19], head[20]]);
    Some(ferry_wal::crc::crc32c_combine(
        crc32c::crc32c(&head),
        kafka_crc,
        (total - CRC_COVERS_FROM) as u64,
    ))
}

fn wal_entry(e: AppendEntry) -> WalEntry {
    let no_data = e.external.is_some() || e.is_empty();
    WalEntry {
        data_crc: if no_data {
            None
        } else {
            batch_crc(&e.segments)
        },
        topic: e.topic,
        topic_id: e.topic_id,
        partition: e.partition,
        base_offset: e.base_offset,
        last_offset: e.last_offset,
        record_count: e.record_count.max(0) as u32,
        max_timestamp: e.max_timestamp,
        producer: e.producer,
        data: if no_data {
            Vec::new()
        } else {
            e.segments.to_vec()
        },
        leader_epoch: e.leader_epoch,
        external: e.external.map(|l| ferry_wal::ExternalRef {
            key: l.key,
            position: l.position,
            len: l.len,
            crc: l.crc,
        }),
    }
}

/// Where a node's handoff objects go: `handoff/<node>/<seq>.wal`.
pub const HANDOFF_PREFIX: &str = "handoff";

fn wal_error(e: WalError) -> DurableError {
    match e {
        WalError::Backpressure { inflight_bytes, .. } => DurableError::Backpressure {
            inflight_bytes: inflight_bytes as u64,
        },
        WalError::Closed => DurableError::Closed,
        other => DurableError::Wal(other),
    }
}

impl WalLog {
    /// Recovers what the bucket holds for `config.node_id`, then starts the
    /// writer after the last object found.
    pub fn open(store: Arc<dyn ObjectStore>, config: WalConfig) -> Result<Opened, WalError> {
        WalLog::open_with_handoff(store, config, None)
    }

    /// [`WalLog::open`], with the handoff writer's own settings
    /// (`automq.zonerouter.channels`'s `batchInterval` / `maxBytesInBatch`).
    pub fn open_with_handoff(
        store: Arc<dyn ObjectStore>,
        config: WalConfig,
        handoff: Option<WalConfig>,
    ) -> Result<Opened, WalError> {
        WalLog::open_with_options(store, config, handoff, RecoveryOptions::default())
    }

    /// [`WalLog::open_with_handoff`], with the operator's recovery options.
    ///
    /// Reading the bucket is retried, with backoff up to
    /// [`RECOVERY_BACKOFF_MAX`], for as long as the store answers with
    /// errors other than a proven NotFound (500, 503, timeouts, an
    /// unreachable endpoint): nothing is served meanwhile, and nothing is
    /// rebuilt without an object that could not be read. Errors no retry
    /// can change (credentials, permissions) and corrupt metadata stop the
    /// start.
    pub fn open_with_options(
        store: Arc<dyn ObjectStore>,
        mut config: WalConfig,
        handoff: Option<WalConfig>,
        options: RecoveryOptions,
    ) -> Result<Opened, WalError> {
        let io = IoRuntime::new(config.io_threads.max(1))?;
        let node_id = config.node_id;
        let started = std::time::Instant::now();
        let mut backoff = Duration::from_millis(100);
        let mut attempt = 1u32;
        let found = loop {
            match io.block_on(recover(&*store, node_id, &options)) {
                Ok(found) => break found,
                Err(e) if worth_retrying(&e) => {
                    tracing::warn!(
                        error = %e,
                        attempt,
                        waited_ms = started.elapsed().as_millis() as u64,
                        retry_in_ms = backoff.as_millis() as u64,
                        "the bucket could not be read at start-up; nothing is served until it is"
                    );
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(RECOVERY_BACKOFF_MAX);
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        };
        if attempt > 1 {
            tracing::info!(
                attempts = attempt,
                waited_ms = started.elapsed().as_millis() as u64,
                "the bucket is readable again; recovery went on"
            );
        }
        let Found {
            topics,
            groups,
            zone_cidrs,
            recovered,
            blocked,
            next_seq,
            handoff_next_seq,
            objects_read,
            batches,
        } = found;
        // The handoff writer: same settings (the zonerouter channel's, when
        // the node has one: see `open_with_handoff`), its own prefix, and
        // sequence numbers after any object it left.
        let mut handoff_config = handoff.unwrap_or_else(|| config.clone());
        handoff_config.node_id = node_id;
        handoff_config.prefix = HANDOFF_PREFIX.to_string();
        handoff_config.first_seq = handoff_next_seq;
        let handoff_writer = WalWriter::start_on(&io, store.clone(), handoff_config)?;
        let handoff_handle = handoff_writer.handle();
        config.first_seq = next_seq;
        config.prefix = WAL_PREFIX.to_string();
        let inflight_bytes_max = config.inflight_bytes_max;
        let writer = WalWriter::start_on(&io, store.clone(), config)?;
        let stats = writer.stats();
        let handle = writer.handle();
        let reader = writer.reader();
        let log = Arc::new(WalLog {
            writer: parking_lot::Mutex::new(Some(writer)),
            handle,
            handoff_writer: parking_lot::Mutex::new(Some(handoff_writer)),
            handoff: handoff_handle,
            reader,
            io,
            store,
            inflight_bytes_max,
            node_id,
            meta_written: Default::default(),
            objects_deleted: Default::default(),
            handoff_deleted: Default::default(),
            indexes: Default::default(),
            compacted_deleted: Default::default(),
            stats,
            accept_lost: Arc::new(options.accept_lost.clone()),
            store_stats: options.store_stats.clone(),
        });
        Ok(Opened {
            log,
            topics,
            groups,
            zone_cidrs,
            recovered,
            blocked,
            objects_read,
            batches,
        })
    }

    /// The tokio runtime the log's I/O runs on (the etcd client runs there
    /// too).
    pub fn runtime(&self) -> tokio::runtime::Handle {
        self.io.handle().clone()
    }

    /// Uploads what is pending and stops the writer (a clean stop).
    pub fn shutdown(&self, timeout: Duration) {
        if let Some(w) = self.handoff_writer.lock().take() {
            if let Err(e) = w.shutdown(timeout) {
                tracing::warn!(error = %e, "handoff writer shutdown");
            }
        }
        if let Some(w) = self.writer.lock().take() {
            if let Err(e) = w.shutdown(timeout) {
                tracing::warn!(error = %e, "WAL shutdown");
            }
        }
    }
}

/// What one attempt of start-up recovery read from the bucket.
struct Found {
    topics: TopicTable,
    groups: Option<Bytes>,
    zone_cidrs: Option<String>,
    recovered: Recovered,
    blocked: crate::storage::durable::Blocked,
    next_seq: u64,
    handoff_next_seq: u64,
    objects_read: u64,
    batches: usize,
}

/// One attempt at reading what the bucket holds for `node_id`: metadata,
/// the WAL, compacted objects and the handoff sequence. Any store error but
/// a proven NotFound fails the attempt (the caller retries); corrupt WAL
/// objects block the partitions whose history they may hold.
async fn recover(
    store: &dyn ObjectStore,
    node_id: u32,
    options: &RecoveryOptions,
) -> Result<Found, WalError> {
    let topics = match get_meta(store, "topics").await? {
        Some(b) => TopicTable::decode(&b).map_err(|e| WalError::Config {
            param: "meta/topics".into(),
            expected: "a topic table written by Ferry".into(),
            found: e.to_string(),
        })?,
        None => TopicTable::default(),
    };
    // This node's committed offsets; before nodes kept one object each,
    // the one node's were in `meta/groups`.
    let name = crate::storage::durable::groups_meta_name(node_id as i32);
    let groups = match get_meta(store, &name).await? {
        Some(g) => Some(g),
        None => get_meta(store, "groups").await?,
    };
    let zone_cidrs = get_meta(store, crate::storage::durable::ZONE_CIDRS_META)
        .await?
        .and_then(|b| String::from_utf8(b.to_vec()).ok());
    let rec = recovery::scan(store, WAL_PREFIX, node_id).await?;
    let compacted = compact::scan_compacted(store, node_id).await?;
    let handoff_next_seq = ferry_wal::reader::list_objects(store, HANDOFF_PREFIX, node_id)
        .await?
        .last()
        .map_or(0, |o| o.seq + 1);
    let is_live = |topic: &str, id: &[u8; 16]| topics.get(topic).is_some_and(|t| t.id.0 == *id);
    // Compacted objects of deleted topics, and copies a merge left
    // behind, are not read by anything: they go.
    let mut orphans = compacted.redundant.clone();
    // Only entries of the topics that exist now, by id: a topic deleted
    // and created again under its name starts empty. A partition's
    // compacted entries come first; WAL entries they already hold are
    // left out (they are the same batches, and their WAL objects go
    // once nothing else reads from them).
    let mut live: Vec<ferry_wal::RecoveredEntry> = Vec::new();
    let mut compacted_end: std::collections::HashMap<(Arc<str>, i32), i64> = Default::default();
    for (key, entries) in &compacted.partitions {
        let Some(first) = entries.first() else {
            continue;
        };
        if !is_live(&first.entry.topic, &first.entry.topic_id) {
            orphans.extend(entries.iter().map(|e| Path::from(&*e.key)));
            continue;
        }
        if let Some(last) = entries.last() {
            compacted_end.insert(key.clone(), last.entry.last_offset + 1);
        }
        live.extend(entries.iter().cloned());
    }
    live.extend(
        rec.entries
            .iter()
            .filter(|e| is_live(&e.entry.topic, &e.entry.topic_id))
            .filter(|e| {
                compacted_end
                    .get(&(e.entry.topic.clone(), e.entry.partition))
                    .is_none_or(|end| e.entry.last_offset >= *end)
            })
            .cloned(),
    );
    // Objects that could not be read: the partitions whose history they
    // may hold are blocked, never rebuilt around them.
    let mut skipped = rec.skipped.clone();
    skipped.extend(compacted.skipped.iter().map(|(key, error)| {
        ferry_wal::recovery::SkippedObject {
            key: key.to_string(),
            seq: compact::COMPACTED_SEQ,
            error: error.clone(),
        }
    }));
    let blocked = blocked_partitions(
        &live,
        &skipped,
        topics
            .iter()
            .flat_map(|t| (0..t.partitions).map(move |p| (t.id.0, p))),
        options,
        |id| {
            topics
                .iter()
                .find(|t| t.id.0 == *id)
                .map(|t| t.name.clone())
        },
    );
    orphans.sort();
    orphans.dedup();
    for key in orphans {
        match store.delete(&key).await {
            Ok(()) => {
                tracing::info!(object_key = %key, "deleted an unreferenced compacted object")
            }
            Err(e) => {
                tracing::warn!(object_key = %key, error = %e, "could not delete an unreferenced compacted object")
            }
        }
    }
    let logs = recovery::rebuild(&live);
    let mut recovered = Recovered::new();
    let mut batches = 0;
    // A blocked partition's entries stay in `recovered`: its shard never
    // builds it from them (it answers KAFKA_STORAGE_ERROR), but they keep
    // its objects referenced, so nothing of its history is deleted.
    for (key, log) in logs {
        let list = recovered.entry(key).or_default();
        for e in &log.entries {
            let i = &e.entry;
            let p = i.producer;
            list.push((
                LogBatch {
                    base_offset: i.base_offset,
                    last_offset: i.last_offset,
                    max_timestamp: i.max_timestamp,
                    len: i.len,
                    data: None,
                    location: Some(e.location()),
                    handoff: None,
                },
                (p.id >= 0).then_some((p.id, p.epoch, p.first_sequence, p.last_sequence)),
            ));
            batches += 1;
        }
    }
    Ok(Found {
        topics,
        groups,
        zone_cidrs,
        recovered,
        blocked,
        next_seq: rec.next_seq,
        handoff_next_seq,
        objects_read: rec.objects_read + compacted.objects_read,
        batches,
    })
}

/// The partitions among `candidates` that objects a scan could not read
/// block (see `ferry_wal::recovery::unread_blocks`), by topic name, with
/// every unread object logged as an error and every accepted loss logged
/// as one too.
fn blocked_partitions(
    entries: &[ferry_wal::RecoveredEntry],
    skipped: &[ferry_wal::recovery::SkippedObject],
    candidates: impl IntoIterator<Item = ([u8; 16], i32)>,
    options: &RecoveryOptions,
    name_of: impl Fn(&[u8; 16]) -> Option<Arc<str>>,
) -> crate::storage::durable::Blocked {
    let accepted = |key: &str| options.accept_lost.iter().any(|k| k == key);
    for s in skipped {
        if s.error.is_not_found() {
            tracing::info!(object_key = %s.key, "an object listed was deleted before it was read; it held nothing in use");
        } else if accepted(&s.key) {
            tracing::error!(object_key = %s.key, error = %s.error,
                "ACCEPTED LOSS: an unreadable object is left out because ferry.recovery.accept.lost.objects names it; records it held are gone and their offsets may be given out again");
        } else {
            tracing::error!(object_key = %s.key, error = %s.error,
                "an object of acknowledged data cannot be read; the partitions it may hold are stopped (KAFKA_STORAGE_ERROR) until it is readable or ferry.recovery.accept.lost.objects names it");
        }
    }
    let by_id = recovery::unread_blocks(entries, skipped, candidates, &accepted);
    let mut out = crate::storage::durable::Blocked::new();
    for ((id, partition), objects) in by_id {
        let Some(topic) = name_of(&id) else { continue };
        tracing::error!(topic = &*topic, partition, objects = ?objects,
            "partition stopped: its history may be in an unreadable object");
        out.insert((topic, partition), objects);
    }
    out
}

async fn get_meta(store: &dyn ObjectStore, name: &str) -> Result<Option<Bytes>, WalError> {
    let key = Path::from(format!("meta/{name}"));
    match store.get(&key).await {
        Ok(r) => r.bytes().await.map(Some).map_err(|e| WalError::Store {
            op: "get",
            key: key.to_string(),
            source: Arc::new(e),
        }),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(WalError::Store {
            op: "get",
            key: key.to_string(),
            source: Arc::new(e),
        }),
    }
}

impl WalAppender for WalLog {
    fn reserve(&self, bytes: usize) -> Result<(), DurableError> {
        let inflight = self.handle.inflight_bytes();
        if inflight + bytes as u64 > self.inflight_bytes_max as u64 {
            return Err(DurableError::Backpressure {
                inflight_bytes: inflight,
            });
        }
        Ok(())
    }

    fn append(&self, e: AppendEntry) -> AppendAck {
        let rx = self.handle.append(wal_entry(e));
        Box::pin(async move {
            match rx.await {
                Ok(r) => r.map_err(wal_error),
                Err(_) => Err(DurableError::Closed),
            }
        })
    }

    fn resume_partition(&self, topic: &str, partition: i32) {
        self.handle.resume_partition(topic, partition);
    }

    fn handoff_append(&self, e: AppendEntry) -> AppendAck {
        let rx = self.handoff.append(wal_entry(e));
        Box::pin(async move {
            match rx.await {
                Ok(r) => r.map_err(wal_error),
                Err(_) => Err(DurableError::Closed),
            }
        })
    }

    fn flush(&self) {
        // The answer is each entry's own acknowledgement.
        drop(self.handle.flush());
    }
}

impl BatchReader for WalLog {
    fn is_handoff_object_of(&self, key: &str, node: i32) -> bool {
        let path = object_store::path::Path::from(key);
        key.starts_with(HANDOFF_PREFIX)
            && key.as_bytes().get(HANDOFF_PREFIX.len()) == Some(&b'/')
            && ferry_wal::reader::parse_node(&path).is_some_and(|n| i64::from(n) == i64::from(node))
            && path.parts().count() == 3
    }

    fn read_adjacent(&self, locations: Vec<crate::storage::durable::Location>) -> ReadManyAck {
        // The WAL's error names the object.
        let rx = self.reader.read_adjacent(locations);
        Box::pin(async move {
            match rx.await {
                Ok(Ok(b)) => Ok(b),
                Ok(Err(e)) => Err(DurableError::Wal(e)),
                Err(_) => Err(DurableError::Closed),
            }
        })
    }

    fn load_partitions(
        &self,
        want: Vec<([u8; 16], i32)>,
    ) -> oneshot::Receiver<Result<crate::storage::durable::LoadedPartitions, DurableError>> {
        let store = self.store.clone();
        let indexes = self.indexes.clone();
        let accept_lost = self.accept_lost.clone();
        self.io.spawn(async move {
            let wanted: std::collections::HashSet<([u8; 16], i32)> = want.into_iter().collect();
            let scan = recovery::scan_partitions_cached(
                &*store,
                WAL_PREFIX,
                |id, p| wanted.contains(&(*id, p)),
                &indexes,
            )
            .await
            .map_err(wal_error)?;
            for s in &scan.skipped {
                tracing::warn!(object_key = %s.key, error = %s.error, "skipped an object while taking partitions over");
            }
            let mut ids: std::collections::HashMap<(Arc<str>, i32), [u8; 16]> = Default::default();
            for e in &scan.entries {
                ids.insert((e.entry.topic.clone(), e.entry.partition), e.entry.topic_id);
            }
            let mut out = crate::storage::durable::LoadedPartitions::new();
            // Partitions whose history may be in an object that could not
            // be read are answered blocked, never rebuilt without it.
            let accepted = |key: &str| accept_lost.iter().any(|k| k == key);
            for s in scan.skipped.iter().filter(|s| !s.error.is_not_found()) {
                if accepted(&s.key) {
                    tracing::error!(object_key = %s.key, error = %s.error,
                        "ACCEPTED LOSS: an unreadable object is left out of a takeover because ferry.recovery.accept.lost.objects names it");
                } else {
                    tracing::error!(object_key = %s.key, error = %s.error,
                        "an object of acknowledged data cannot be read; the partitions it may hold are not taken over");
                }
            }
            let blocked = recovery::unread_blocks(
                &scan.entries,
                &scan.skipped,
                wanted.iter().copied(),
                &accepted,
            );
            for (key, objects) in blocked {
                out.insert(
                    key,
                    crate::storage::durable::Loaded {
                        blocked: objects,
                        ..Default::default()
                    },
                );
            }
            for (key, log) in recovery::rebuild_fenced(&scan.entries) {
                let Some(id) = ids.get(&key) else { continue };
                if out.contains_key(&(*id, key.1)) {
                    continue;
                }
                if !log.fenced.is_empty() {
                    tracing::info!(topic = &*key.0, partition = key.1, entries = log.fenced.len(),
                        "a fenced leader's late writes are left out");
                }
                let batches = log
                    .entries
                    .iter()
                    .map(|e| {
                        let i = &e.entry;
                        let p = i.producer;
                        (
                            LogBatch {
                                base_offset: i.base_offset,
                                last_offset: i.last_offset,
                                max_timestamp: i.max_timestamp,
                                len: e.location().len,
                                data: None,
                                location: Some(e.location()),
                                handoff: None,
                            },
                            (p.id >= 0)
                                .then_some((p.id, p.epoch, p.first_sequence, p.last_sequence)),
                        )
                    })
                    .collect();
                out.insert(
                    (*id, key.1),
                    crate::storage::durable::Loaded {
                        batches,
                        log_end: log.log_end,
                        blocked: Vec::new(),
                    },
                );
            }
            Ok(out)
        })
    }
}

impl MetaStore for WalLog {
    fn put_meta(
        &self,
        name: &str,
        version: u64,
        data: Bytes,
    ) -> oneshot::Receiver<Result<(), DurableError>> {
        let store = self.store.clone();
        let key = Path::from(format!("meta/{name}"));
        let written = self
            .meta_written
            .lock()
            .entry(name.to_string())
            .or_default()
            .clone();
        self.io.spawn(async move {
            // One write of a name at a time; an older version than the last
            // written is already covered by it.
            let mut last = written.lock().await;
            if version <= *last {
                return Ok(());
            }
            store
                .put(&key, PutPayload::from(data))
                .await
                .map_err(|e| DurableError::Store {
                    op: "put",
                    key: key.to_string(),
                    source: Arc::new(e),
                })?;
            *last = version;
            Ok(())
        })
    }

    fn get_meta(&self, name: &str) -> oneshot::Receiver<Result<Option<Bytes>, DurableError>> {
        let store = self.store.clone();
        let name = name.to_string();
        self.io
            .spawn(async move { get_meta(&*store, &name).await.map_err(wal_error) })
    }
}

impl ObjectLifecycle for WalLog {
    fn compact(
        &self,
        entries: Vec<AppendEntry>,
    ) -> oneshot::Receiver<Result<Vec<crate::storage::durable::Location>, DurableError>> {
        let store = self.store.clone();
        let node = self.node_id;
        let stats = self.stats.clone();
        self.io.spawn(async move {
            let entries: Vec<WalEntry> = entries.into_iter().map(wal_entry).collect();
            compact::write_compacted(&*store, node, &entries, &stats)
                .await
                .map_err(wal_error)
        })
    }

    fn delete_object(&self, key: Arc<str>) -> oneshot::Receiver<Result<(), DurableError>> {
        let store = self.store.clone();
        let deleted = self.compacted_deleted.clone();
        self.io.spawn(async move {
            let path = Path::from(&*key);
            match store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                    deleted.fetch_add(1, Relaxed);
                    Ok(())
                }
                Err(e) => Err(DurableError::Store {
                    op: "delete",
                    key: key.to_string(),
                    source: Arc::new(e),
                }),
            }
        })
    }

    fn delete_node_objects(
        &self,
        kind: crate::storage::durable::ObjectKind,
        node: u32,
        below: u64,
        min_age: Duration,
    ) -> oneshot::Receiver<Result<usize, DurableError>> {
        let store = self.store.clone();
        let deleted = match kind {
            crate::storage::durable::ObjectKind::Wal => self.objects_deleted.clone(),
            crate::storage::durable::ObjectKind::Handoff => self.handoff_deleted.clone(),
        };
        self.io.spawn(async move {
            let n =
                ferry_wal::cleanup::delete_objects(&*store, kind.prefix(), node, below, min_age)
                    .await
                    .map_err(wal_error)?;
            deleted.fetch_add(n as u64, Relaxed);
            Ok(n)
        })
    }

    fn object_owners(
        &self,
        kind: crate::storage::durable::ObjectKind,
    ) -> oneshot::Receiver<Result<Vec<u32>, DurableError>> {
        let store = self.store.clone();
        self.io.spawn(async move {
            let prefix = Path::from(kind.prefix());
            let listed = store
                .list_with_delimiter(Some(&prefix))
                .await
                .map_err(|e| DurableError::Store {
                    op: "list",
                    key: prefix.to_string(),
                    source: Arc::new(e),
                })?;
            Ok(listed
                .common_prefixes
                .iter()
                .filter_map(|p| p.filename()?.parse().ok())
                .collect())
        })
    }
}

impl DurableLog for WalLog {
    fn render_metrics(&self) -> String {
        let s = self.handle.stats();
        // The handoff writer's own counters (its PUTs are not in
        // `ferry_s3_puts_total`, which stays the WAL writer's).
        let h = self.handoff.stats();
        let mut e = Exposition::new();
        let node = self.node_id.to_string();
        for (name, kind, v) in [
            (
                "ferry_wal_objects_total",
                Kind::Counter,
                s.objects_uploaded.load(Relaxed),
            ),
            (
                "ferry_wal_bytes_total",
                Kind::Counter,
                s.bytes_uploaded.load(Relaxed),
            ),
            (
                "ferry_s3_puts_total",
                Kind::Counter,
                s.put_requests.load(Relaxed),
            ),
            (
                "ferry_s3_put_errors_total",
                Kind::Counter,
                s.put_errors.load(Relaxed),
            ),
            (
                "ferry_s3_gets_total",
                Kind::Counter,
                s.get_requests.load(Relaxed),
            ),
            (
                "ferry_s3_get_errors_total",
                Kind::Counter,
                s.get_errors.load(Relaxed),
            ),
            (
                "ferry_wal_inflight_bytes",
                Kind::Gauge,
                s.inflight_bytes.load(Relaxed),
            ),
            (
                "ferry_wal_objects_deleted_total",
                Kind::Counter,
                self.objects_deleted.load(Relaxed),
            ),
            (
                "ferry_handoff_objects_total",
                Kind::Counter,
                h.objects_uploaded.load(Relaxed),
            ),
            (
                "ferry_handoff_bytes_total",
                Kind::Counter,
                h.bytes_uploaded.load(Relaxed),
            ),
            (
                "ferry_handoff_puts_total",
                Kind::Counter,
                h.put_requests.load(Relaxed),
            ),
            (
                "ferry_handoff_put_errors_total",
                Kind::Counter,
                h.put_errors.load(Relaxed),
            ),
            (
                "ferry_handoff_objects_deleted_total",
                Kind::Counter,
                self.handoff_deleted.load(Relaxed),
            ),
            (
                "ferry_compacted_objects_total",
                Kind::Counter,
                s.compacted_objects.load(Relaxed),
            ),
            (
                "ferry_compacted_bytes_total",
                Kind::Counter,
                s.compacted_bytes.load(Relaxed),
            ),
            (
                "ferry_compacted_objects_deleted_total",
                Kind::Counter,
                self.compacted_deleted.load(Relaxed),
            ),
        ] {
            e.family(name, kind).sample(name, &[("node", &node)], v);
        }
        // Latencies as summaries over the most recent samples. A produce's
        // time in the writer is split three ways (see `ferry_wal::stats`).
        let mut summaries: Vec<(&str, &ferry_wal::stats::LatencyHistogram)> = vec![
            ("ferry_wal_upload_latency_seconds", &s.upload),
            ("ferry_produce_wait_interval_seconds", &s.wait_interval),
            ("ferry_produce_put_seconds", &s.put),
            ("ferry_produce_wait_earlier_seconds", &s.wait_earlier),
        ];
        if let Some(st) = &self.store_stats {
            summaries.push(("ferry_s3_put_latency_seconds", &st.put_request));
            summaries.push(("ferry_s3_get_latency_seconds", &st.get_request));
            for (name, kind, v) in [
                ("ferry_s3_hedges_total", Kind::Counter, &st.hedges_sent),
                ("ferry_s3_hedges_won_total", Kind::Counter, &st.hedges_won),
                (
                    "ferry_s3_put_hedges_total",
                    Kind::Counter,
                    &st.put_hedges_sent,
                ),
                (
                    "ferry_s3_put_hedges_won_total",
                    Kind::Counter,
                    &st.put_hedges_won,
                ),
                (
                    "ferry_s3_timeouts_total",
                    Kind::Counter,
                    &st.request_timeouts,
                ),
                ("ferry_s3_throttles_total", Kind::Counter, &st.throttles),
                ("ferry_s3_retries_total", Kind::Counter, &st.retries),
                ("ferry_s3_put_limit", Kind::Gauge, &st.put_limit),
            ] {
                e.family(name, kind)
                    .sample(name, &[("node", &node)], v.load(Relaxed));
            }
        }
        for (name, h) in summaries {
            let qs = [0.5, 0.99, 0.999];
            let Some(values) = h.recent_quantiles_us(&qs) else {
                continue;
            };
            e.family(name, Kind::Summary);
            for (q, v) in qs.iter().zip(values) {
                e.sample(
                    name,
                    &[("quantile", &q.to_string())],
                    format_args!("{:.6}", v as f64 / 1e6),
                );
            }
        }
        e.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_protocol::records::{NewRecord, RecordBatchBuilder};

    #[test]
    fn a_batch_crc_comes_from_its_own_crc_and_its_first_21_bytes() {
        let mut b = RecordBatchBuilder::new();
        for i in 0..50u8 {
            b.push(NewRecord::new(
                1_700_000_000_000 + i64::from(i),
                Some(&[i]),
                Some(&[i; 300]),
            ));
        }
        let raw = Bytes::from(b.build().unwrap());
        let whole = crc32c::crc32c(&raw);
        // As a partition hands it over: a rewritten 16-byte head, the rest a view.
        for cut in [16, 3, 21, 40, raw.len()] {
            let segments = [raw.slice(..cut), raw.slice(cut..)];
            assert_eq!(batch_crc(&segments), Some(whole), "cut at {cut}");
        }
        // Not exactly one batch: computed the slow way instead.
        let two = [raw.clone(), raw.clone()];
        assert_eq!(batch_crc(&two), None);
        assert_eq!(batch_crc(&[raw.slice(..20), Bytes::new()]), None);
        let mut legacy = raw.to_vec();
        legacy[16] = 1;
        assert_eq!(batch_crc(&[Bytes::from(legacy)]), None);
    }
}
