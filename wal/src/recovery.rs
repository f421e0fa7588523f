//! Rebuilding what a node wrote, from its WAL objects in the bucket.
//!
//! After a clean stop or `kill -9`, [`scan`] lists the node's objects and
//! reads every index, in sequence order, and returns every entry with its
//! location. An object that is corrupt or partial is skipped and reported,
//! never a panic, and the objects after it are still read. A GET that fails
//! for another reason (the bucket is unreachable) is retried, and then fails
//! the whole scan: skipping a readable object would lose acknowledged data.
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

use std::collections::BTreeMap;
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
    pub key: Arc<str>,
    pub seq: u64,
    pub entry: IndexEntry,
}

impl RecoveredEntry {
    /// Where to read the entry's bytes: in the object `key`, or for an
    /// external entry in the external object (with `seq` still the WAL
    /// object's, see [`WalLocation`]).
    pub fn location(&self) -> WalLocation {
        WalLocation::of_entry(&self.key, self.seq, &self.entry)
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
        let WalObjectMeta { key, seq, .. } = meta;
        match result {
            Ok(index) if index.header.seq == seq && index.header.node_id == node_id => {
                recovery.objects_read += 1;
                let key: Arc<str> = Arc::from(key.as_ref());
                recovery
                    .entries
                    .extend(index.entries.into_iter().map(|entry| RecoveredEntry {
                        key: key.clone(),
                        seq,
                        entry,
                    }));
            }
            Ok(index) => {
                let error = WalError::corrupt(
                    key.to_string(),
                    crate::error::FormatError::BadIndex {
                        reason: format!(
                            "header says node {} object {}, the key says node {node_id} object {seq}",
                            index.header.node_id, index.header.seq
                        ),
                    },
                );
                error!(object_key = %key, error = %error, "WAL object skipped");
                recovery.skipped.push(SkippedObject {
                    key: key.to_string(),
                    seq,
                    error,
                });
            }
            Err(error @ (WalError::Corrupt { .. } | WalError::Store { .. })) => {
                // Store errors left here are NotFound: the object went away
                // between the listing and the read.
                error!(object_key = %key, error = %error, "WAL object skipped");
                recovery.skipped.push(SkippedObject {
                    key: key.to_string(),
                    seq,
                    error,
                });
            }
            Err(other) => return Err(other),
        }
    }
    Ok(recovery)
}

/// Retries store errors other than NotFound; returns the rest at once.
async fn with_retries<T, F, Fut>(mut op: F) -> Result<T, WalError>
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

#[cfg(test)]
mod tests {
    use super::*;

    fn e(seq: u64, topic: &str, partition: i32, base: i64, last: i64) -> RecoveredEntry {
        RecoveredEntry {
            key: Arc::from(format!("wal/1/{seq:020}.wal").as_str()),
            seq,
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
}
