//! Rebuilding what a node wrote, from its WAL objects in the bucket.
//!
//! After a clean stop or `kill -9`, [`scan`] lists the node's objects and
//! reads every index, in sequence order, and returns every entry with its
//! location. An object that is corrupt or partial is skipped and reported,
//! never a panic, and the objects after it are still read; the caller then
//! stops every partition whose history it may hold ([`unread_blocks`]). An
//! object the store proves absent (NotFound) after the listing is skipped:
//! it was deleted because nothing referred to it. A GET or LIST that fails
//! for any other reason (500, 503 SlowDown, a timeout, the bucket
//! unreachable) is retried, and then fails the whole scan: skipping a
//! readable object would lose acknowledged data.
//!
//! [`rebuild`] then turns the entries into each partition's log, with the
//! rules that make it agree with what the writer acknowledged:
//!
//! - entries are taken in object order, then index order (offset order
//!   within a partition);
//! - an entry that continues the log (`base_offset == log_end`), or the first
//!   entry of a partition, is appended;
//! - an entry that starts at or below the log end supersedes the entries it
//!   overlaps: they were a write whose outcome was an error, and the owner
//!   rewound the partition and wrote those offsets again;
//! - an entry that starts past the log end follows a write that never became
//!   durable, so it was never acknowledged (the writer acknowledges in
//!   order, and stops a partition after a failure): it is left out, and
//!   reported as a gap.
//!
//! These rules assume the entries are the partition's whole history in write
//! order: one node's WAL, or several nodes' merged in commit order.
//!
//! After a failover, the new leader of some partitions reads every node's
//! objects for them with [`scan_partitions`] (WAL objects of every node,
//! compacted objects of the wanted partitions), and merges the histories
//! with [`rebuild_fenced`]: by leader epoch, compacted entries first, with
//! epoch markers fencing an old leader's late writes, and within one epoch
//! the rules above.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use futures_util::StreamExt;
use object_store::ObjectStore;
use tracing::{error, warn};

use crate::error::WalError;
use crate::object::IndexEntry;
use crate::reader::{list_objects, read_index_counted, WalObjectMeta};
use crate::stats::WalStats;
use crate::writer::WalLocation;

/// Index reads in flight at once during a scan.
pub const RECOVERY_READS_INFLIGHT_MAX: usize = 8;
/// Attempts per object (and for the listing) when the store errors.
pub const RECOVERY_ATTEMPTS_MAX: u32 = 4;
const RECOVERY_BACKOFF_INITIAL: Duration = Duration::from_millis(100);

static UNCOUNTED: LazyLock<WalStats> = LazyLock::new(WalStats::default);

/// One entry found in the WAL, with the object it is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredEntry {
    /// The key of the object holding the index entry (a WAL object, or a
    /// compacted object).
    pub key: Arc<str>,
    /// The WAL object's sequence number (`compact::COMPACTED_SEQ` for a
    /// compacted object).
    pub seq: u64,
    /// The node that wrote the object (from its header).
    pub node_id: u32,
    pub entry: IndexEntry,
}

impl RecoveredEntry {
    /// Where to read the entry's bytes: in the object `key`, or for an
    /// external entry in the external object (with `seq` still the WAL
    /// object's, see [`WalLocation`]).
    pub fn location(&self) -> WalLocation {
        WalLocation::of_entry(&self.key, self.node_id, self.seq, &self.entry)
    }
}

/// An object the scan could not use, and why.
#[derive(Debug, Clone)]
pub struct SkippedObject {
    pub key: String,
    pub seq: u64,
    pub error: WalError,
}

/// What a scan found.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    /// Objects whose index was read.
    pub objects_read: u64,
    /// Every entry, in object order then index order.
    pub entries: Vec<RecoveredEntry>,
    /// Corrupt, partial or vanished objects.
    pub skipped: Vec<SkippedObject>,
    /// The sequence number the writer continues from: one past the highest
    /// seen, skipped objects included (0 for an empty WAL).
    pub next_seq: u64,
}

/// Scans one node's WAL objects (see the module doc).
pub async fn scan(
    store: &dyn ObjectStore,
    prefix: &str,
    node_id: u32,
) -> Result<Recovery, WalError> {
    scan_counted(store, prefix, node_id, &UNCOUNTED).await
}

pub(crate) async fn scan_counted(
    store: &dyn ObjectStore,
    prefix: &str,
    node_id: u32,
    stats: &WalStats,
) -> Result<Recovery, WalError> {
    let objects = with_retries(|| list_objects(store, prefix, node_id)).await?;
    let next_seq = objects.last().map_or(0, |o| o.seq + 1);
    let mut reads = futures_util::stream::iter(objects)
        .map(|meta| async move {
            let result =
                with_retries(|| read_index_counted(store, &meta.key, Some(meta.size), stats)).await;
            (meta, result)
        })
        .buffered(RECOVERY_READS_INFLIGHT_MAX);
    let mut recovery = Recovery {
        next_seq,
        ..Recovery::default()
    };
    while let Some((meta, result)) = reads.next().await {
        if take_index(
            node_id,
            meta,
            result,
            &|_, _| true,
            &mut recovery.entries,
            &mut recovery.skipped,
        )? {
            recovery.objects_read += 1;
        }
    }
    Ok(recovery)
}

/// What [`scan_partitions`] found: some partitions' entries, from every
/// node's WAL objects and compacted objects.
#[derive(Debug, Clone, Default)]
pub struct PartitionsScan {
    /// The wanted partitions' entries: every node's WAL entries, by node,
    /// then object order, then index order; then the compacted entries
    /// (`seq == compact::COMPACTED_SEQ`), by node, partition and offset.
    /// Epoch markers are included. Feed them to [`rebuild_fenced`].
    pub entries: Vec<RecoveredEntry>,
    /// WAL and compacted objects whose index was read.
    pub objects_read: u64,
    /// Corrupt, partial or vanished objects (compacted ones with
    /// `seq == compact::COMPACTED_SEQ`).
    pub skipped: Vec<SkippedObject>,
    /// Per node found under the WAL prefix: one past its highest WAL
    /// object sequence number.
    pub next_seq: BTreeMap<u32, u64>,
    /// Compacted objects none of whose wanted entries were kept (copies a
    /// merge left behind).
    pub redundant: Vec<object_store::path::Path>,
}

/// Scans every node's objects for the partitions `want` takes (topic id,
/// partition), for a leader taking partitions over after a failover.
///
/// It lists the node folders under `wal_prefix` (`<wal_prefix>/<node>/…`)
/// and reads the index of every WAL object of every node (an index says
/// which partitions an object holds, so all are read), and it lists the
/// compacted objects (`data/<node>/<topic id>/<partition>/…`) of wanted
/// topics only, reading only wanted partitions' objects. Reads run
/// [`RECOVERY_READS_INFLIGHT_MAX`] at a time and are retried as in
/// [`scan`]; a corrupt, partial or vanished object is skipped and reported,
/// and any other store error fails the scan.
pub async fn scan_partitions(
    store: &dyn ObjectStore,
    wal_prefix: &str,
    want: impl Fn(&[u8; 16], i32) -> bool + Sync,
) -> Result<PartitionsScan, WalError> {
    scan_partitions_counted(store, wal_prefix, &want, &UNCOUNTED, None).await
}

/// The parsed indexes of WAL objects, by key. WAL objects never change
/// once written, so a node that scans the bucket again (each time it takes
/// partitions over) reads only the indexes of objects new since.
#[derive(Debug, Default)]
pub struct IndexCache {
    /// Key to (size as listed, index): a key whose listed size is not the
    /// cached one is read again.
    #[allow(clippy::type_complexity)]
    indexes:
        std::sync::Mutex<std::collections::HashMap<String, (u64, Arc<crate::object::ObjectIndex>)>>,
}

impl IndexCache {
    pub fn new() -> IndexCache {
        IndexCache::default()
    }

    /// How many indexes it holds.
    pub fn len(&self) -> usize {
        self.indexes.lock().map_or(0, |m| m.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn get(&self, key: &str, size: u64) -> Option<Arc<crate::object::ObjectIndex>> {
        let m = self.indexes.lock().ok()?;
        let (cached_size, index) = m.get(key)?;
        (*cached_size == size).then(|| index.clone())
    }

    pub(crate) fn put(&self, key: &str, size: u64, index: Arc<crate::object::ObjectIndex>) {
        if let Ok(mut m) = self.indexes.lock() {
            m.insert(key.to_owned(), (size, index));
        }
    }

    /// Forgets every object under `prefix` not in `listed` (deleted since).
    pub(crate) fn keep_only(&self, prefix: &str, listed: &std::collections::HashSet<String>) {
        if let Ok(mut m) = self.indexes.lock() {
            m.retain(|k, _| !k.starts_with(prefix) || listed.contains(k));
        }
    }
}

/// [`scan_partitions`] that reads the index of an object only if `cache`
/// does not hold it yet, and keeps what it read there.
pub async fn scan_partitions_cached(
    store: &dyn ObjectStore,
    wal_prefix: &str,
    want: impl Fn(&[u8; 16], i32) -> bool + Sync,
    cache: &IndexCache,
) -> Result<PartitionsScan, WalError> {
    scan_partitions_counted(store, wal_prefix, &want, &UNCOUNTED, Some(cache)).await
}

pub(crate) async fn scan_partitions_counted(
    store: &dyn ObjectStore,
    wal_prefix: &str,
    want: &(dyn Fn(&[u8; 16], i32) -> bool + Sync),
    stats: &WalStats,
    cache: Option<&IndexCache>,
) -> Result<PartitionsScan, WalError> {
    let folder = object_store::path::Path::from(wal_prefix);
    let listed = with_retries(|| async {
        store
            .list_with_delimiter(Some(&folder))
            .await
            .map_err(|e| WalError::store("LIST", folder.to_string(), e))
    })
    .await?;
    let mut nodes: Vec<u32> = listed
        .common_prefixes
        .iter()
        .filter_map(|p| {
            let name = p.filename()?;
            let node = name.parse().ok();
            if node.is_none() {
                warn!(folder = %p, "not a node folder under the WAL prefix; ignored");
            }
            node
        })
        .collect();
    nodes.sort_unstable();
    let mut out = PartitionsScan::default();
    let mut objects = Vec::new();
    for node_id in nodes {
        let listed = with_retries(|| list_objects(store, wal_prefix, node_id)).await?;
        if let Some(last) = listed.last() {
            out.next_seq.insert(node_id, last.seq + 1);
        }
        objects.extend(listed.into_iter().map(|meta| (node_id, meta)));
    }
    if let Some(cache) = cache {
        cache.keep_only(
            &format!("{wal_prefix}/"),
            &objects.iter().map(|(_, m)| m.key.to_string()).collect(),
        );
    }
    let mut reads = futures_util::stream::iter(objects)
        .map(|(node_id, meta)| async move {
            let key = meta.key.to_string();
            if let Some(index) = cache.and_then(|c| c.get(&key, meta.size)) {
                // Only the wanted entries are copied out of the cached index.
                let index = crate::object::ObjectIndex {
                    entries: index
                        .entries
                        .iter()
                        .filter(|e| want(&e.topic_id, e.partition))
                        .cloned()
                        .collect(),
                    header: index.header,
                    version: index.version,
                    footer: index.footer,
                    object_len: index.object_len,
                };
                return (node_id, meta, Ok(index));
            }
            let result =
                with_retries(|| read_index_counted(store, &meta.key, Some(meta.size), stats)).await;
            if let (Some(cache), Ok(index)) = (cache, &result) {
                cache.put(&key, meta.size, Arc::new(index.clone()));
            }
            (node_id, meta, result)
        })
        .buffered(RECOVERY_READS_INFLIGHT_MAX);
    while let Some((node_id, meta, result)) = reads.next().await {
        if take_index(
            node_id,
            meta,
            result,
            want,
            &mut out.entries,
            &mut out.skipped,
        )? {
            out.objects_read += 1;
        }
    }
    drop(reads);
    let compacted = crate::compact::scan_compacted_partitions(store, want, stats, cache).await?;
    out.objects_read += compacted.objects_read;
    out.entries.extend(compacted.entries);
    out.redundant = compacted.redundant;
    out.skipped.extend(
        compacted
            .skipped
            .into_iter()
            .map(|(key, error)| SkippedObject {
                key: key.to_string(),
                seq: crate::compact::COMPACTED_SEQ,
                error,
            }),
    );
    Ok(out)
}

/// Retries store errors other than NotFound; returns the rest at once.
pub(crate) async fn with_retries<T, F, Fut>(mut op: F) -> Result<T, WalError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, WalError>>,
{
    let mut backoff = RECOVERY_BACKOFF_INITIAL;
    let mut attempt = 1;
    loop {
        match op().await {
            Err(WalError::Store {
                ref source,
                ref key,
                op: what,
            }) if !matches!(**source, object_store::Error::NotFound { .. }) => {
                if attempt >= RECOVERY_ATTEMPTS_MAX {
                    return Err(WalError::Store {
                        op: what,
                        key: key.clone(),
                        source: source.clone(),
                    });
                }
                warn!(object_key = %key, attempt, error = %source, "WAL recovery read failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// One object's index read during a scan: its entries that `want` takes go
/// to `entries` (answers `true`); an object whose header does not match its
/// key, or that is corrupt, or proven gone (NotFound), is skipped and
/// reported; any other error fails the scan.
fn take_index(
    node_id: u32,
    meta: WalObjectMeta,
    result: Result<crate::object::ObjectIndex, WalError>,
    want: &(dyn Fn(&[u8; 16], i32) -> bool + Sync),
    entries: &mut Vec<RecoveredEntry>,
    skipped: &mut Vec<SkippedObject>,
) -> Result<bool, WalError> {
    let WalObjectMeta { key, seq, .. } = meta;
    let error = match result {
        Ok(index) if index.header.seq == seq && index.header.node_id == node_id => {
            let key: Arc<str> = Arc::from(key.as_ref());
            entries.extend(
                index
                    .entries
                    .into_iter()
                    .filter(|e| want(&e.topic_id, e.partition))
                    .map(|entry| RecoveredEntry {
                        key: key.clone(),
                        seq,
                        node_id,
                        entry,
                    }),
            );
            return Ok(true);
        }
        Ok(index) => WalError::corrupt(
            key.to_string(),
            crate::error::FormatError::BadIndex {
                reason: format!(
                    "header says node {} object {}, the key says node {node_id} object {seq}",
                    index.header.node_id, index.header.seq
                ),
            },
        ),
        // The object went away between the listing and the read: only a
        // proven NotFound makes it absent. WAL objects are deleted only
        // once nothing refers to them (their entries compacted, dropped by
        // retention, or fenced), so its absence loses nothing.
        Err(error @ WalError::Store { .. }) if error.is_not_found() => error,
        // Corrupt or partial: reported, never read around. The caller
        // stops the partitions whose history it may hold
        // ([`unread_blocks`]).
        Err(error @ WalError::Corrupt { .. }) => error,
        // Any other error (the store failing, throttling, timing out) fails
        // the scan: skipping a readable object would lose acknowledged data.
        Err(other) => return Err(other),
    };
    error!(object_key = %key, error = %error, "WAL object skipped");
    skipped.push(SkippedObject {
        key: key.to_string(),
        seq,
        error,
    });
    Ok(false)
}

/// Partitions whose history may be in an object a scan could not read
/// (corrupt or partial, see [`SkippedObject`]): for each, the keys of the
/// objects that block it. A blocked partition must not be served, nor
/// rebuilt without those objects: its offsets after the unread ones would
/// be given out again.
///
/// An unread WAL object of node `n` with sequence `s` blocks a partition
/// unless `n`'s own history of the partition proves it needs nothing from
/// it: `n` wrote an entry or epoch marker of the partition in an object
/// after `s`, and the first such starts at or below where the partition
/// stood before `s` (the end of `n`'s entries of it in earlier objects, or
/// the end of its compacted entries in `entries`, whichever is higher; 0
/// if neither). A writer acknowledges a partition's batches in order and
/// rewinds it only over writes that failed, so any acknowledged batch in
/// `s` would make that first entry start above it. A partition `n` did not
/// write after `s` cannot be cleared this way, and is blocked.
///
/// An unread compacted object blocks the partition its key names
/// (`data/<node>/<topic id>/<partition>/…`). Objects proven absent
/// (NotFound) block nothing, and neither do the keys in `accepted`: the
/// objects whose loss the operator has accepted.
pub fn unread_blocks<'a>(
    entries: &[RecoveredEntry],
    skipped: &[SkippedObject],
    candidates: impl IntoIterator<Item = ([u8; 16], i32)>,
    accepted: &'a (dyn Fn(&str) -> bool + 'a),
) -> BTreeMap<([u8; 16], i32), Vec<String>> {
    let unread: Vec<&SkippedObject> = skipped
        .iter()
        .filter(|s| !s.error.is_not_found() && !accepted(&s.key))
        .collect();
    let mut out: BTreeMap<([u8; 16], i32), Vec<String>> = BTreeMap::new();
    if unread.is_empty() {
        return out;
    }
    // Each node's WAL entries per partition, in (sequence, index) order,
    // and where each partition's compacted entries end.
    type ByNode<'e> = BTreeMap<u32, Vec<&'e RecoveredEntry>>;
    let mut history: BTreeMap<([u8; 16], i32), ByNode> = BTreeMap::new();
    let mut compacted_end: BTreeMap<([u8; 16], i32), i64> = BTreeMap::new();
    for e in entries {
        let key = (e.entry.topic_id, e.entry.partition);
        if e.seq == crate::compact::COMPACTED_SEQ {
            let end = compacted_end.entry(key).or_insert(i64::MIN);
            *end = (*end).max(e.entry.last_offset.saturating_add(1));
            continue;
        }
        history
            .entry(key)
            .or_default()
            .entry(e.node_id)
            .or_default()
            .push(e);
    }
    for list in history.values_mut().flat_map(|m| m.values_mut()) {
        list.sort_by_key(|e| e.seq); // stable: index order within an object
    }
    let empty = Vec::new();
    for (topic_id, partition) in candidates {
        for s in &unread {
            let blocked = if s.seq == crate::compact::COMPACTED_SEQ {
                crate::compact::parse_compacted_key(&s.key)
                    .is_some_and(|(id, p)| id == topic_id && p == partition)
            } else {
                let Some(node) =
                    crate::reader::parse_node(&object_store::path::Path::from(s.key.as_str()))
                else {
                    // Not a key a scan lists; nothing to reason about.
                    continue;
                };
                let own = history
                    .get(&(topic_id, partition))
                    .and_then(|m| m.get(&node))
                    .unwrap_or(&empty);
                let before = own
                    .iter()
                    .filter(|e| e.seq < s.seq)
                    .map(|e| e.entry.last_offset.saturating_add(1))
                    .chain(compacted_end.get(&(topic_id, partition)).copied())
                    .max()
                    .unwrap_or(0);
                own.iter()
                    .find(|e| e.seq > s.seq)
                    .is_none_or(|first| first.entry.base_offset > before)
            };
            if blocked {
                out.entry((topic_id, partition))
                    .or_default()
                    .push(s.key.clone());
            }
        }
    }
    out
}

/// One partition's log as rebuilt by [`rebuild`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartitionLog {
    /// The log's entries, dense and in offset order.
    pub entries: Vec<RecoveredEntry>,
    /// First offset of the log (base offset of its first entry).
    pub log_start: i64,
    /// The next offset to assign.
    pub log_end: i64,
    /// Entries replaced by a later write of the same offsets.
    pub superseded: Vec<RecoveredEntry>,
    /// Entries left out because they start past the log end.
    pub gaps: Vec<RecoveredEntry>,
    /// Entries left out because a newer leader epoch starts at or below
    /// their last offset: a fenced leader's late writes ([`rebuild_fenced`]
    /// only).
    pub fenced: Vec<RecoveredEntry>,
    /// Offsets missing inside the log ([`rebuild_fenced`] only): between
    /// compacted objects, or before a newer epoch's start when the history
    /// read ends earlier (an object that was lost or skipped). The log
    /// continues after a hole; the caller decides what to do about it.
    pub holes: Vec<Range<i64>>,
    /// The highest leader epoch seen in the partition, and where it starts
    /// (its epoch marker, or else its first entry). `None` from [`rebuild`].
    pub epoch: Option<EpochStart>,
}

/// Where a leader epoch starts in a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochStart {
    pub leader_epoch: i32,
    pub start_offset: i64,
}

/// Turns scanned entries into per-partition logs (see the module doc).
pub fn rebuild(entries: &[RecoveredEntry]) -> BTreeMap<(Arc<str>, i32), PartitionLog> {
    let mut logs: BTreeMap<(Arc<str>, i32), PartitionLog> = BTreeMap::new();
    // Epoch markers are not log entries (see `rebuild_fenced` for what they mean).
    for e in entries.iter().filter(|e| !e.entry.is_epoch_marker()) {
        let log = logs
            .entry((e.entry.topic.clone(), e.entry.partition))
            .or_default();
        let base = e.entry.base_offset;
        if log.entries.is_empty() && log.superseded.is_empty() && log.gaps.is_empty() {
            log.log_start = base;
        } else if base > log.log_end {
            warn!(
                topic = &*e.entry.topic,
                partition = e.entry.partition,
                object_key = &*e.key,
                base_offset = base,
                log_end = log.log_end,
                "WAL entry past a gap left out"
            );
            log.gaps.push(e.clone());
            continue;
        } else if base < log.log_end {
            let keep = log
                .entries
                .iter()
                .position(|old| old.entry.last_offset >= base)
                .unwrap_or(log.entries.len());
            log.superseded.extend(log.entries.drain(keep..));
            if log.entries.is_empty() {
                log.log_start = base;
            }
        }
        log.log_end = e.entry.last_offset + 1;
        log.entries.push(e.clone());
    }
    logs
}

/// Merges several nodes' histories of the same partitions into each
/// partition's log, by leader epoch: what a new leader rebuilds after a
/// failover, from [`scan_partitions`].
///
/// Per partition:
///
/// 1. **Epochs.** Epoch `e` starts at its epoch marker's offset (the
///    lowest, if several), or where no marker is left (compacted, or its
///    object deleted), at its first entry; a marker wins over entries. An entry of epoch `e` whose
///    last offset is at or past the start of any epoch above `e` is left
///    out and reported in `fenced`: it is a write of a leader that had been
///    fenced, made after the new leader had started at those offsets (or
///    straddling that start, which only a late rewrite can do).
/// 2. **Compacted entries first** (`seq == compact::COMPACTED_SEQ`): they
///    are copies of batches that were final (below a high watermark) when
///    compacted, so no write supersedes them. They are taken in offset
///    order, one copy of each offset (later copies go to `superseded`);
///    a space between them is reported in `holes`.
/// 3. **WAL entries** in order of (leader epoch, node, sequence number,
///    index order), leaving out those that start below the end of the
///    compacted entries (they are the same batches, or history compaction
///    already resolved). At the first entry of each epoch, if the epoch has
///    a marker past the log end, the offsets in between are a hole and the
///    log continues at the marker: the new leader started there. Then the
///    rules of [`rebuild`] apply: an entry continuing the log is appended,
///    one starting below the log end supersedes what it overlaps (a rewind
///    of the same epoch's leader), one starting past the log end is a gap.
///
/// Epoch markers are not log entries. Compacted entries must carry their
/// batches' leader epoch: one written with epoch 0 under an epoch that
/// started at a lower offset is fenced. Entries are keyed by topic name:
/// pass one topic id per name (what `scan_partitions`'s filter selects).
pub fn rebuild_fenced(entries: &[RecoveredEntry]) -> BTreeMap<(Arc<str>, i32), PartitionLog> {
    /// Each entry with its place in the input (the index order).
    type Numbered<'a> = Vec<(usize, &'a RecoveredEntry)>;
    let mut by_partition: BTreeMap<(Arc<str>, i32), Numbered<'_>> = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        by_partition
            .entry((e.entry.topic.clone(), e.entry.partition))
            .or_default()
            .push((i, e));
    }
    by_partition
        .into_iter()
        .map(|(key, list)| {
            let log = rebuild_partition_fenced(&key, list);
            (key, log)
        })
        .collect()
}

fn rebuild_partition_fenced(
    key: &(Arc<str>, i32),
    list: Vec<(usize, &RecoveredEntry)>,
) -> PartitionLog {
    let (topic, partition) = (&*key.0, key.1);
    let mut log = PartitionLog::default();
    // Where each epoch starts: at its marker, or without one, at its first
    // entry. A marker wins over entries, so that an odd entry of a newer
    // epoch (below its own start) cannot fence what came before.
    let mut marker_start: BTreeMap<i32, i64> = BTreeMap::new();
    let mut entry_start: BTreeMap<i32, i64> = BTreeMap::new();
    for (_, e) in &list {
        let ie = &e.entry;
        let starts = if ie.is_epoch_marker() {
            &mut marker_start
        } else {
            &mut entry_start
        };
        let s = starts.entry(ie.leader_epoch).or_insert(ie.base_offset);
        *s = (*s).min(ie.base_offset);
    }
    let mut start = entry_start;
    start.extend(marker_start.iter().map(|(&e, &s)| (e, s)));
    log.epoch = start.last_key_value().map(|(&e, &s)| EpochStart {
        leader_epoch: e,
        start_offset: s,
    });
    // The lowest start of any epoch above each epoch.
    let mut fence: BTreeMap<i32, i64> = BTreeMap::new();
    let mut lowest_above = i64::MAX;
    for (&e, &s) in start.iter().rev() {
        fence.insert(e, lowest_above);
        lowest_above = lowest_above.min(s);
    }

    let mut compacted = Vec::new();
    let mut wal = Vec::new();
    for (i, e) in list {
        let ie = &e.entry;
        if !ie.is_epoch_marker()
            && fence
                .get(&ie.leader_epoch)
                .is_some_and(|&f| ie.last_offset >= f)
        {
            warn!(
                topic,
                partition,
                object_key = &*e.key,
                leader_epoch = ie.leader_epoch,
                base_offset = ie.base_offset,
                last_offset = ie.last_offset,
                "WAL entry of a fenced leader epoch left out"
            );
            log.fenced.push(e.clone());
        } else if e.seq == crate::compact::COMPACTED_SEQ {
            if !ie.is_epoch_marker() {
                compacted.push((i, e));
            }
        } else {
            wal.push((i, e));
        }
    }

    let mut started = false;
    compacted.sort_by_key(|&(i, e)| (e.entry.base_offset, i));
    for (_, e) in compacted {
        let base = e.entry.base_offset;
        if !started {
            started = true;
            log.log_start = base;
        } else if base < log.log_end {
            log.superseded.push(e.clone());
            continue;
        } else if base > log.log_end {
            warn!(
                topic,
                partition,
                from = log.log_end,
                to = base,
                "hole between compacted objects"
            );
            log.holes.push(log.log_end..base);
        }
        log.log_end = e.entry.last_offset + 1;
        log.entries.push(e.clone());
    }
    let compacted_end = if started { log.log_end } else { i64::MIN };

    wal.sort_by_key(|&(i, e)| (e.entry.leader_epoch, e.node_id, e.seq, i));
    let mut epoch = None;
    for (_, e) in wal {
        let ie = &e.entry;
        if epoch != Some(ie.leader_epoch) {
            epoch = Some(ie.leader_epoch);
            if let Some(&s) = marker_start.get(&ie.leader_epoch) {
                if !started {
                    started = true;
                    log.log_start = s;
                    log.log_end = s;
                } else if s > log.log_end {
                    warn!(
                        topic,
                        partition,
                        leader_epoch = ie.leader_epoch,
                        from = log.log_end,
                        to = s,
                        "leader epoch starts past the end of the log read before it"
                    );
                    log.holes.push(log.log_end..s);
                    log.log_end = s;
                }
            }
        }
        if ie.is_epoch_marker() || ie.base_offset < compacted_end {
            continue;
        }
        let base = ie.base_offset;
        if !started {
            started = true;
            log.log_start = base;
        } else if base > log.log_end {
            warn!(
                topic,
                partition,
                object_key = &*e.key,
                base_offset = base,
                log_end = log.log_end,
                "WAL entry past a gap left out"
            );
            log.gaps.push(e.clone());
            continue;
        } else if base < log.log_end {
            let keep = log
                .entries
                .iter()
                .position(|old| old.entry.last_offset >= base)
                .unwrap_or(log.entries.len());
            log.superseded.extend(log.entries.drain(keep..));
            if log.entries.is_empty() {
                log.log_start = base;
            }
        }
        log.log_end = ie.last_offset + 1;
        log.entries.push(e.clone());
    }
    log
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(seq: u64, topic: &str, partition: i32, base: i64, last: i64) -> RecoveredEntry {
        RecoveredEntry {
            key: Arc::from(format!("wal/1/{seq:020}.wal").as_str()),
            seq,
            node_id: 1,
            entry: IndexEntry {
                topic: Arc::from(topic),
                topic_id: [0; 16],
                partition,
                base_offset: base,
                last_offset: last,
                position: 32,
                len: 1,
                crc: 0,
                record_count: (last - base + 1) as u32,
                max_timestamp: 0,
                producer: Default::default(),
                leader_epoch: 0,
                external: None,
            },
        }
    }

    fn bases(log: &PartitionLog) -> Vec<(u64, i64)> {
        log.entries
            .iter()
            .map(|r| (r.seq, r.entry.base_offset))
            .collect()
    }

    #[test]
    fn dense_entries_make_a_log() {
        let logs = rebuild(&[e(0, "t", 0, 0, 9), e(0, "t", 1, 0, 4), e(1, "t", 0, 10, 19)]);
        let p0 = &logs[&(Arc::from("t"), 0)];
        assert_eq!((p0.log_start, p0.log_end), (0, 20));
        assert_eq!(bases(p0), vec![(0, 0), (1, 10)]);
        assert_eq!(logs[&(Arc::from("t"), 1)].log_end, 5);
    }

    #[test]
    fn a_log_may_start_anywhere() {
        let logs = rebuild(&[e(5, "t", 0, 1000, 1009)]);
        let p = &logs[&(Arc::from("t"), 0)];
        assert_eq!((p.log_start, p.log_end), (1000, 1010));
    }

    #[test]
    fn a_rewritten_range_supersedes_the_failed_write() {
        // Object 1 failed after landing; the owner rewound to 10 and wrote again.
        let logs = rebuild(&[
            e(0, "t", 0, 0, 9),
            e(1, "t", 0, 10, 19),
            e(2, "t", 0, 20, 29),
            e(3, "t", 0, 10, 14),
        ]);
        let p = &logs[&(Arc::from("t"), 0)];
        assert_eq!(bases(p), vec![(0, 0), (3, 10)]);
        assert_eq!(p.log_end, 15);
        assert_eq!(p.superseded.len(), 2);
        assert!(p.gaps.is_empty());
    }

    #[test]
    fn entries_past_a_missing_write_are_left_out() {
        // Object 1 never landed; objects 2 and 3 were uploading when the node died;
        // after restart object 7 continues from offset 10.
        let logs = rebuild(&[
            e(0, "t", 0, 0, 9),
            e(2, "t", 0, 20, 29),
            e(3, "t", 0, 30, 39),
            e(7, "t", 0, 10, 12),
        ]);
        let p = &logs[&(Arc::from("t"), 0)];
        assert_eq!(bases(p), vec![(0, 0), (7, 10)]);
        assert_eq!(p.log_end, 13);
        assert_eq!(p.gaps.len(), 2);
    }

    // --- rebuild_fenced ---

    /// An entry of "t"-0 written by `node` in its WAL object `seq`, epoch `epoch`.
    fn w(node: u32, seq: u64, epoch: i32, base: i64, last: i64) -> RecoveredEntry {
        let mut r = e(seq, "t", 0, base, last);
        r.key = Arc::from(format!("wal/{node}/{seq:020}.wal").as_str());
        r.node_id = node;
        r.entry.leader_epoch = epoch;
        r
    }

    /// An epoch marker: `epoch` starts at `start`.
    fn m(node: u32, seq: u64, epoch: i32, start: i64) -> RecoveredEntry {
        let mut r = w(node, seq, epoch, start, start - 1);
        r.entry.record_count = 0;
        r.entry.len = 0;
        assert!(r.entry.is_epoch_marker());
        r
    }

    /// A compacted copy by `node`.
    fn c(node: u32, epoch: i32, base: i64, last: i64) -> RecoveredEntry {
        let mut r = w(node, crate::compact::COMPACTED_SEQ, epoch, base, last);
        r.key = Arc::from(format!("data/{node}/00/0/{base:020}-1.obj").as_str());
        r
    }

    /// (node, seq, epoch, base, last) of each log entry.
    fn shape(log: &PartitionLog) -> Vec<(u32, u64, i32, i64, i64)> {
        log.entries
            .iter()
            .map(|r| {
                let i = &r.entry;
                (
                    r.node_id,
                    r.seq,
                    i.leader_epoch,
                    i.base_offset,
                    i.last_offset,
                )
            })
            .collect()
    }

    fn one(entries: &[RecoveredEntry]) -> PartitionLog {
        let logs = rebuild_fenced(entries);
        assert_eq!(logs.len(), 1);
        logs[&(Arc::from("t"), 0)].clone()
    }

    fn assert_dense(log: &PartitionLog) {
        let mut next = log.log_start;
        for r in &log.entries {
            assert_eq!(r.entry.base_offset, next, "{:?}", shape(log));
            next = r.entry.last_offset + 1;
        }
        assert_eq!(next, log.log_end);
    }

    #[test]
    fn a_late_write_of_an_old_epoch_after_a_newer_marker_is_dropped() {
        // Node 1 led epoch 1 up to 19. Node 2 took over with epoch 2 at 20.
        // Node 1, not yet aware, wrote 20..29 and 30..39 later, and a late
        // rewrite straddling 20.
        let log = one(&[
            w(1, 0, 1, 0, 9),
            w(1, 1, 1, 10, 19),
            w(1, 2, 1, 20, 29),
            w(1, 3, 1, 30, 39),
            w(1, 4, 1, 15, 24),
            m(2, 0, 2, 20),
            w(2, 0, 2, 20, 24),
            w(2, 1, 2, 25, 34),
        ]);
        assert_eq!(
            shape(&log),
            vec![
                (1, 0, 1, 0, 9),
                (1, 1, 1, 10, 19),
                (2, 0, 2, 20, 24),
                (2, 1, 2, 25, 34)
            ]
        );
        assert_dense(&log);
        assert_eq!((log.log_start, log.log_end), (0, 35));
        let fenced: Vec<_> = log
            .fenced
            .iter()
            .map(|r| (r.seq, r.entry.base_offset))
            .collect();
        assert_eq!(fenced, vec![(2, 20), (3, 30), (4, 15)]);
        assert!(log.gaps.is_empty() && log.holes.is_empty() && log.superseded.is_empty());
        assert_eq!(
            log.epoch,
            Some(EpochStart {
                leader_epoch: 2,
                start_offset: 20
            })
        );
    }

    #[test]
    fn old_epoch_entries_below_the_marker_are_kept_with_their_rewinds() {
        // Epoch 1 had a failed write (10..19 landed) rewound to 10 before
        // the takeover; epoch 2 starts where that history ends.
        let log = one(&[
            m(2, 5, 2, 15),
            w(1, 0, 1, 0, 9),
            w(1, 1, 1, 10, 19),
            w(1, 2, 1, 10, 14),
        ]);
        assert_eq!(shape(&log), vec![(1, 0, 1, 0, 9), (1, 2, 1, 10, 14)]);
        assert_eq!(log.log_end, 15, "the log ends where epoch 2 starts");
        // The failed write reaches past epoch 2's start: it is left out as
        // fenced before the rewind could supersede it (same log either way).
        assert_eq!(
            log.fenced.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![1]
        );
        assert!(log.superseded.is_empty() && log.gaps.is_empty() && log.holes.is_empty());
        assert_eq!(log.epoch.map(|e| e.start_offset), Some(15));
    }

    #[test]
    fn two_epochs_from_two_nodes_interleave_into_one_dense_log() {
        // 1 leads epoch 1, 2 leads epoch 2, then 1 again with epoch 3. The
        // input is in scan order (by node), not in history order.
        let log = one(&[
            w(1, 0, 1, 0, 9),
            w(1, 1, 1, 10, 19),
            m(1, 7, 3, 40),
            w(1, 7, 3, 40, 44),
            w(1, 8, 3, 45, 49),
            m(2, 3, 2, 20),
            w(2, 3, 2, 20, 29),
            w(2, 4, 2, 30, 39),
        ]);
        assert_eq!(
            shape(&log),
            vec![
                (1, 0, 1, 0, 9),
                (1, 1, 1, 10, 19),
                (2, 3, 2, 20, 29),
                (2, 4, 2, 30, 39),
                (1, 7, 3, 40, 44),
                (1, 8, 3, 45, 49),
            ]
        );
        assert_dense(&log);
        assert!(log.fenced.is_empty() && log.gaps.is_empty() && log.holes.is_empty());
        assert_eq!(
            log.epoch,
            Some(EpochStart {
                leader_epoch: 3,
                start_offset: 40
            })
        );
        // And the result does not depend on the order of the input.
        let mut reversed = vec![
            w(2, 4, 2, 30, 39),
            w(2, 3, 2, 20, 29),
            m(2, 3, 2, 20),
            w(1, 8, 3, 45, 49),
            w(1, 7, 3, 40, 44),
            m(1, 7, 3, 40),
            w(1, 1, 1, 10, 19),
            w(1, 0, 1, 0, 9),
        ];
        // (index order within one object: the marker before the entry)
        reversed.swap(1, 2);
        reversed.swap(4, 5);
        assert_eq!(shape(&one(&reversed)), shape(&log));
    }

    #[test]
    fn gaps_and_holes_are_reported() {
        let log = one(&[
            w(1, 0, 1, 0, 9),
            // Object 1 never landed: 20..29 follows a missing write.
            w(1, 2, 1, 20, 29),
            // Epoch 2 started at 15: the history read ends at 10.
            m(2, 0, 2, 15),
            w(2, 0, 2, 15, 19),
        ]);
        assert_eq!(shape(&log), vec![(1, 0, 1, 0, 9), (2, 0, 2, 15, 19)]);
        // 20..29 of epoch 1 is past epoch 2's start: fenced, not a gap.
        assert_eq!(log.fenced.len(), 1);
        assert_eq!(log.holes, vec![10..15]);
        assert_eq!(log.log_end, 20);

        let log = one(&[w(1, 0, 1, 0, 9), w(1, 2, 1, 20, 29), w(1, 3, 1, 30, 39)]);
        assert_eq!(shape(&log), vec![(1, 0, 1, 0, 9)]);
        assert_eq!(
            log.gaps
                .iter()
                .map(|r| r.entry.base_offset)
                .collect::<Vec<_>>(),
            vec![20, 30]
        );
        assert!(log.holes.is_empty());
    }

    #[test]
    fn compacted_entries_come_first_and_their_wal_copies_are_left_out() {
        let log = one(&[
            // Node 1's WAL still holds what it compacted, and more, plus a
            // failed write straddling the compacted end (history).
            w(1, 0, 1, 0, 9),
            w(1, 1, 1, 10, 19),
            w(1, 2, 1, 10, 24),
            w(1, 3, 1, 20, 29),
            m(2, 0, 2, 30),
            w(2, 0, 2, 30, 39),
            // Compacted by node 1 (epoch 1) and by node 2 (a copy of 10..19
            // and its own 30..39).
            c(1, 1, 0, 9),
            c(1, 1, 10, 19),
            c(2, 1, 10, 19),
            c(2, 2, 30, 39),
        ]);
        let got: Vec<_> = log
            .entries
            .iter()
            .map(|r| (r.seq == crate::compact::COMPACTED_SEQ, r.entry.base_offset))
            .collect();
        assert_eq!(got, vec![(true, 0), (true, 10), (true, 30)]);
        assert_eq!(
            log.holes,
            vec![20..30],
            "20..29 is only in the WAL, below compacted 30..39"
        );
        assert_eq!(log.superseded.len(), 1, "node 2's copy of 10..19");
        assert!(log.fenced.is_empty());

        // Without node 2's compacted 30..39, the WAL fills in after 20.
        let log = one(&[
            w(1, 0, 1, 0, 9),
            w(1, 1, 1, 10, 19),
            w(1, 2, 1, 10, 24),
            w(1, 3, 1, 20, 29),
            m(2, 0, 2, 30),
            w(2, 0, 2, 30, 39),
            c(1, 1, 0, 9),
            c(1, 1, 10, 19),
        ]);
        let got: Vec<_> = log
            .entries
            .iter()
            .map(|r| (r.seq == crate::compact::COMPACTED_SEQ, r.entry.base_offset))
            .collect();
        assert_eq!(got, vec![(true, 0), (true, 10), (false, 20), (false, 30)]);
        assert_dense(&log);
        assert!(log.holes.is_empty() && log.gaps.is_empty());
    }

    #[test]
    fn compacted_late_writes_of_a_fenced_leader_are_fenced_too() {
        let log = one(&[
            c(1, 1, 0, 9),
            // Node 1 compacted its late 10..19 after node 2 took over at 10.
            c(1, 1, 10, 19),
            m(2, 0, 2, 10),
            w(2, 0, 2, 10, 14),
        ]);
        assert_eq!(
            shape(&log).iter().map(|s| s.3).collect::<Vec<_>>(),
            vec![0, 10]
        );
        assert_eq!(log.entries[1].node_id, 2);
        assert_eq!(log.fenced.len(), 1);
        assert_dense(&log);
    }

    #[test]
    fn a_lost_marker_is_inferred_from_the_newer_epochs_entries() {
        // Epoch 2's marker went with its deleted WAL object; its compacted
        // entries still fence epoch 1's late write.
        let log = one(&[w(1, 0, 1, 0, 9), w(1, 1, 1, 10, 19), c(2, 2, 10, 14)]);
        assert_eq!(
            shape(&log).iter().map(|s| s.3).collect::<Vec<_>>(),
            vec![10]
        );
        assert_eq!(log.fenced.len(), 1);
        assert_eq!(
            log.epoch,
            Some(EpochStart {
                leader_epoch: 2,
                start_offset: 10
            })
        );
    }

    #[test]
    fn a_marker_wins_over_an_odd_entry_of_its_epoch_below_it() {
        // Epoch 2 starts at 10 by its marker; a late write of epoch 2,
        // reaching back to 5 and past epoch 3's start, fences nothing of
        // epoch 1 below 10 and is itself fenced by epoch 3.
        let log = one(&[
            w(1, 0, 1, 0, 9),
            m(2, 0, 2, 10),
            w(2, 1, 2, 10, 14),
            m(1, 1, 3, 15),
            w(2, 2, 2, 5, 16),
            w(1, 2, 3, 15, 19),
        ]);
        assert_eq!(
            shape(&log),
            vec![(1, 0, 1, 0, 9), (2, 1, 2, 10, 14), (1, 2, 3, 15, 19)]
        );
        assert_eq!(
            log.fenced.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![2]
        );
    }

    #[test]
    fn a_partition_with_only_a_marker_starts_there() {
        let log = one(&[m(4, 0, 7, 1234)]);
        assert!(log.entries.is_empty());
        assert_eq!((log.log_start, log.log_end), (1234, 1234));
        assert_eq!(log.epoch.map(|e| e.leader_epoch), Some(7));
        // And markers are never entries of the plain rebuild either.
        assert!(rebuild(&[m(4, 0, 7, 1234)]).is_empty());
    }

    mod fenced_histories {
        use super::*;
        use proptest::prelude::*;

        /// One epoch of a simulated history: its leader, the sizes of the
        /// batches it wrote, and the late writes of that leader after the
        /// next epoch started (offset from the next start, length).
        type Epoch = (u32, Vec<i64>, Vec<(i64, i64)>);
        /// A fenced leader's late writes: node, epoch, (offset, length).
        type Late = (u32, i32, Vec<(i64, i64)>);

        proptest! {
            /// Leaders on three nodes take turns; each fenced leader may
            /// write a few batches late, at or across the next epoch's
            /// start. Whatever the input order (index order kept within an
            /// object), the rebuilt log is exactly the leaders' batches,
            /// dense, and the late writes are fenced.
            #[test]
            fn any_fenced_history_rebuilds_to_what_the_leaders_wrote(
                epochs in proptest::collection::vec(
                    (1u32..4, proptest::collection::vec(1i64..8, 1..5), proptest::collection::vec((-2i64..4, 3i64..9), 0..3)),
                    1..5,
                ),
                order in proptest::collection::vec(any::<u64>(), 64),
            ) {
                let epochs: Vec<Epoch> = epochs;
                let mut next_seq = [0u64; 4];
                let mut seq = |node: u32| { let s = next_seq[node as usize]; next_seq[node as usize] += 1; s };
                let mut input = Vec::new();
                let mut truth = Vec::new();
                let mut late = 0;
                let mut end = 100i64;
                let mut pending_late: Vec<Late> = Vec::new();
                for (i, (node, sizes, lates)) in epochs.iter().enumerate() {
                    let epoch = i as i32 + 1;
                    // The previous leader's late writes land now, past this start.
                    for (n, e, ls) in pending_late.drain(..) {
                        for (d, len) in ls {
                            let base = end + d;
                            if base + len - 1 < end { continue; }
                            input.push(w(n, seq(n), e, base, base + len - 1));
                            late += 1;
                        }
                    }
                    input.push(m(*node, seq(*node), epoch, end));
                    for size in sizes {
                        let s = seq(*node);
                        input.push(w(*node, s, epoch, end, end + size - 1));
                        truth.push((*node, s, epoch, end, end + size - 1));
                        end += size;
                    }
                    pending_late.push((*node, epoch, lates.clone()));
                }
                // Shuffle: one entry per object, so any order is a scan order.
                let mut keyed: Vec<_> = input.into_iter().enumerate().map(|(i, e)| (order[i % order.len()] ^ i as u64, e)).collect();
                keyed.sort_by_key(|(k, _)| *k);
                let input: Vec<_> = keyed.into_iter().map(|(_, e)| e).collect();
                let log = one(&input);
                prop_assert_eq!(shape(&log), truth);
                prop_assert_eq!((log.log_start, log.log_end), (100, end));
                prop_assert_eq!(log.fenced.len(), late);
                prop_assert!(log.gaps.is_empty() && log.holes.is_empty() && log.superseded.is_empty());
                prop_assert_eq!(log.epoch.map(|e| e.leader_epoch), Some(epochs.len() as i32));
            }
        }
    }

    // --- scan_partitions ---

    mod scan_partitions {
        use super::super::*;
        use crate::compact::{write_compacted, COMPACTED_SEQ};
        use crate::object::{ExternalRef, ObjectBuilder, ObjectHeader, ProducerFields, WalEntry};
        use crate::reader::object_key;
        use bytes::Bytes;
        use object_store::memory::InMemory;
        use object_store::path::Path;
        use object_store::{ObjectStoreExt, PutPayload};

        const A: [u8; 16] = [0xaa; 16];
        const B: [u8; 16] = [0xbb; 16];

        fn entry(topic_id: [u8; 16], partition: i32, epoch: i32, base: i64, last: i64) -> WalEntry {
            WalEntry {
                data_crc: None,
                topic: Arc::from(if topic_id == A { "a" } else { "b" }),
                topic_id,
                partition,
                base_offset: base,
                last_offset: last,
                record_count: (last - base + 1) as u32,
                max_timestamp: base,
                producer: ProducerFields::default(),
                data: vec![Bytes::from(format!("{partition}@{base}"))],
                leader_epoch: epoch,
                external: None,
            }
        }

        async fn put_wal(store: &InMemory, node_id: u32, seq: u64, entries: &[WalEntry]) {
            let mut b = ObjectBuilder::new(ObjectHeader {
                node_id,
                seq,
                created_ms: 1,
            });
            for e in entries {
                b.push(e).expect("push");
            }
            let obj = b.finish().expect("finish");
            store
                .put(&object_key("wal", node_id, seq), obj.payload())
                .await
                .expect("put");
        }

        #[test]
        fn a_cached_scan_reads_each_index_once_and_forgets_deleted_objects() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let store = InMemory::new();
                put_wal(&store, 1, 0, &[entry(A, 0, 1, 0, 9), entry(B, 0, 1, 0, 4)]).await;
                put_wal(&store, 2, 0, &[entry(A, 1, 1, 0, 4)]).await;
                let cache = IndexCache::new();
                let stats = WalStats::default();
                let gets = || {
                    stats
                        .get_requests
                        .load(std::sync::atomic::Ordering::Relaxed)
                };
                let want_a0 = |id: &[u8; 16], p: i32| *id == A && p == 0;
                let first = scan_partitions_counted(&store, "wal", &want_a0, &stats, Some(&cache))
                    .await
                    .expect("scan");
                assert_eq!(first.entries.len(), 1);
                let read = gets();
                assert!(read >= 2, "both indexes read: {read} GETs");
                assert_eq!(cache.len(), 2);
                // Again, and for another partition: no index is read again,
                // and only the wanted entries come out.
                let want_b0 = |id: &[u8; 16], p: i32| *id == B && p == 0;
                let again = scan_partitions_counted(&store, "wal", &want_b0, &stats, Some(&cache))
                    .await
                    .expect("scan");
                assert_eq!(gets(), read);
                let got: Vec<_> = again
                    .entries
                    .iter()
                    .map(|e| (e.node_id, e.entry.base_offset))
                    .collect();
                assert_eq!(got, [(1, 0)]);
                assert!(again.entries.iter().all(|e| e.entry.topic_id == B));
                // A new object is read; a deleted one is forgotten.
                put_wal(&store, 2, 1, &[entry(A, 0, 2, 10, 19)]).await;
                store
                    .delete(&object_key("wal", 1, 0))
                    .await
                    .expect("delete");
                let third = scan_partitions_counted(&store, "wal", &want_a0, &stats, Some(&cache))
                    .await
                    .expect("scan");
                assert!(gets() > read);
                assert_eq!(cache.len(), 2);
                let got: Vec<_> = third
                    .entries
                    .iter()
                    .map(|e| (e.node_id, e.seq, e.entry.base_offset))
                    .collect();
                assert_eq!(got, [(2, 1, 10)]);
                // A key written again with other content (and size) is read
                // again, not taken from the cache.
                put_wal(
                    &store,
                    2,
                    1,
                    &[entry(A, 0, 2, 10, 19), entry(A, 0, 2, 20, 29)],
                )
                .await;
                let fourth = scan_partitions_counted(&store, "wal", &want_a0, &stats, Some(&cache))
                    .await
                    .expect("scan");
                assert_eq!(fourth.entries.len(), 2);
            });
        }

        #[test]
        fn scans_two_nodes_wal_and_compacted_objects_of_wanted_partitions_only() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let store = InMemory::new();
                // Node 1 led a-0 and a-1 with epoch 1, compacted a-0's 0..9
                // and a-1, and kept writing a-0 after node 2 took over.
                write_compacted(&store, 1, &[entry(A, 0, 1, 0, 9)], &Default::default())
                    .await
                    .expect("compact");
                write_compacted(&store, 1, &[entry(A, 1, 1, 0, 4)], &Default::default())
                    .await
                    .expect("compact");
                put_wal(&store, 1, 0, &[entry(A, 0, 1, 0, 9), entry(A, 1, 1, 0, 4)]).await;
                put_wal(
                    &store,
                    1,
                    1,
                    &[entry(B, 0, 1, 0, 9), entry(A, 0, 1, 10, 19)],
                )
                .await;
                put_wal(&store, 1, 2, &[entry(A, 0, 1, 20, 29)]).await; // late
                                                                        // Node 2 took a-0 over at 20 with epoch 2; its first batch
                                                                        // came through a proxy's handoff object.
                let handoff = ExternalRef {
                    key: Arc::from("handoff/3/00000000000000000009.wal"),
                    position: 32,
                    len: 70,
                    crc: 5,
                };
                put_wal(
                    &store,
                    2,
                    4,
                    &[
                        WalEntry::epoch_marker(Arc::from("a"), A, 0, 2, 20, 0),
                        WalEntry {
                            data_crc: None,
                            data: Vec::new(),
                            external: Some(handoff.clone()),
                            ..entry(A, 0, 2, 20, 24)
                        },
                        entry(B, 0, 2, 50, 59),
                    ],
                )
                .await;
                put_wal(&store, 2, 5, &[entry(A, 0, 2, 25, 29)]).await;
                // A corrupt WAL object, a stray folder and stray keys.
                store
                    .put(
                        &object_key("wal", 2, 6),
                        PutPayload::from_static(
                            b"not an object at all, but long enough to have a footer",
                        ),
                    )
                    .await
                    .expect("put");
                store
                    .put(
                        &Path::from("wal/notes/readme"),
                        PutPayload::from_static(b"x"),
                    )
                    .await
                    .expect("put");
                // A corrupt compacted object of a partition nobody wants:
                // never read, so never reported.
                store
                    .put(
                        &Path::from(format!(
                            "data/1/{}/0/00000000000000000000-1.obj",
                            "bb".repeat(16)
                        )),
                        PutPayload::from_static(
                            b"garbage garbage garbage garbage garbage garbage garbage",
                        ),
                    )
                    .await
                    .expect("put");

                let scan = scan_partitions(&store, "wal", |id, p| *id == A && p == 0)
                    .await
                    .expect("scan");
                assert!(scan
                    .entries
                    .iter()
                    .all(|e| e.entry.topic_id == A && e.entry.partition == 0));
                let got: Vec<_> = scan
                    .entries
                    .iter()
                    .map(|e| {
                        (
                            e.node_id,
                            e.seq,
                            e.entry.base_offset,
                            e.entry.is_epoch_marker(),
                        )
                    })
                    .collect();
                assert_eq!(
                    got,
                    vec![
                        (1, 0, 0, false),
                        (1, 1, 10, false),
                        (1, 2, 20, false),
                        (2, 4, 20, true),
                        (2, 4, 20, false),
                        (2, 5, 25, false),
                        (1, COMPACTED_SEQ, 0, false),
                    ]
                );
                assert_eq!(scan.skipped.len(), 1, "{:?}", scan.skipped);
                assert_eq!(scan.skipped[0].key, object_key("wal", 2, 6).to_string());
                assert_eq!(scan.next_seq, BTreeMap::from([(1, 3), (2, 7)]));
                // 6 WAL objects read (the corrupt one not) and 1 compacted.
                assert_eq!(scan.objects_read, 6);

                let logs = rebuild_fenced(&scan.entries);
                let log = &logs[&(Arc::from("a"), 0)];
                let shape: Vec<_> = log
                    .entries
                    .iter()
                    .map(|e| (e.node_id, e.seq, e.entry.base_offset))
                    .collect();
                assert_eq!(
                    shape,
                    vec![(1, COMPACTED_SEQ, 0), (1, 1, 10), (2, 4, 20), (2, 5, 25)]
                );
                assert_eq!((log.log_start, log.log_end), (0, 30));
                assert_eq!(log.fenced.len(), 1, "node 1's late 20..29");
                assert_eq!(
                    log.epoch,
                    Some(EpochStart {
                        leader_epoch: 2,
                        start_offset: 20
                    })
                );
                // The handed-off batch is read from the handoff object, and
                // keeps node 2's WAL object 4 in use.
                assert_eq!(
                    log.entries[2].location(),
                    WalLocation {
                        key: handoff.key.clone(),
                        seq: 4,
                        node: 2,
                        position: 32,
                        len: 70,
                        crc: 5,
                    }
                );

                // Another selection: b-0 from both nodes.
                let scan = scan_partitions(&store, "wal", |id, _| *id == B)
                    .await
                    .expect("scan");
                let bases: Vec<_> = scan
                    .entries
                    .iter()
                    .map(|e| (e.node_id, e.entry.base_offset))
                    .collect();
                assert_eq!(bases, vec![(1, 0), (2, 50)]);
                // The corrupt compacted object of b-0 is read now, and skipped.
                assert!(scan
                    .skipped
                    .iter()
                    .any(|s| s.seq == COMPACTED_SEQ && s.key.starts_with("data/1/bbbb")));

                // An empty bucket scans to nothing.
                let empty = scan_partitions(&InMemory::new(), "wal", |_, _| true)
                    .await
                    .expect("scan");
                assert!(empty.entries.is_empty() && empty.next_seq.is_empty());
            });
        }
    }
}
