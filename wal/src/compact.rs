//! Compacted objects: one partition's durable batches, copied out of the WAL
//! objects they were first written to, into larger objects of their own.
//!
//! A WAL object holds a little of many partitions, and it can only be
//! deleted once no partition reads from it any more. Compaction moves each
//! partition's durable batches into per-partition objects, after which the
//! WAL objects go, and an idle node's object count stays flat: the
//! compacted objects hold the data, the WAL holds only what came since the
//! last pass.
//!
//! A compacted object has the WAL object format ([`crate::object`]), with
//! entries of one partition only, in offset order. Its key is
//!
//! ```text
//! data/<node_id>/<topic_id as 32 hex digits>/<partition>/<first base offset:020>-<created ms:013>.obj
//! ```
//!
//! so that the objects of one partition list in offset order, and an object
//! rewritten to merge a small one gets a new key (the old one is deleted
//! after the new one is durable; if both exist after a crash, recovery
//! keeps one copy of each offset, see [`scan_compacted`]).
//!
//! Only batches below the high watermark are compacted: they are final, no
//! write will ever supersede them, so a compacted entry and the WAL entry it
//! was copied from always hold the same bytes.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use tracing::warn;

use crate::error::{FormatError, WalError};
use crate::object::{ObjectBuilder, ObjectHeader, WalEntry};
use crate::reader::read_index_counted;
use crate::recovery::RecoveredEntry;
use crate::stats::WalStats;
use crate::writer::WalLocation;

/// Where compacted objects go in the bucket.
pub const DATA_PREFIX: &str = "data";

/// The sequence number of every compacted location. Compacted objects are
/// not WAL objects: they never hold a WAL object in use, and sort after
/// every WAL object.
pub const COMPACTED_SEQ: u64 = u64::MAX;

/// Attempts per PUT of a compacted object.
const PUT_ATTEMPTS_MAX: u32 = 5;
const PUT_BACKOFF_INITIAL: Duration = Duration::from_millis(100);

static UNCOUNTED: LazyLock<WalStats> = LazyLock::new(WalStats::default);

fn hex(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// The folder of one node's compacted objects.
pub fn node_folder(node_id: u32) -> Path {
    Path::from(format!("{DATA_PREFIX}/{node_id}"))
}

/// The folder of one partition's compacted objects.
pub fn partition_folder(node_id: u32, topic_id: &[u8; 16], partition: i32) -> Path {
    Path::from(format!(
        "{DATA_PREFIX}/{node_id}/{}/{partition}",
        hex(topic_id)
    ))
}

/// The key of a compacted object whose first entry starts at `base_offset`.
pub fn compacted_key(
    node_id: u32,
    topic_id: &[u8; 16],
    partition: i32,
    base_offset: i64,
    created_ms: u64,
) -> Path {
    Path::from(format!(
        "{DATA_PREFIX}/{node_id}/{}/{partition}/{:020}-{created_ms:013}.obj",
        hex(topic_id),
        base_offset.max(0)
    ))
}

/// The topic id and partition a compacted object's key names
/// (`data/<node>/<topic id>/<partition>/<name>.obj`), if it has that shape.
pub fn parse_compacted_key(key: &str) -> Option<([u8; 16], i32)> {
    let mut parts = key.strip_prefix(DATA_PREFIX)?.strip_prefix('/')?.split('/');
    let (_node, topic, partition, name) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !name.ends_with(".obj") || topic.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(topic.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some((id, partition.parse().ok()?))
}

/// Whether a location is in a compacted object rather than a WAL object.
pub fn is_compacted(location: &WalLocation) -> bool {
    location.seq == COMPACTED_SEQ
}

/// Writes `entries` (one partition's, in offset order) as one compacted
/// object, retrying a failed PUT with backoff, and answers each entry's new
/// location. The object is durable when this returns `Ok`.
pub async fn write_compacted(
    store: &dyn ObjectStore,
    node_id: u32,
    entries: &[WalEntry],
    stats: &WalStats,
) -> Result<Vec<WalLocation>, WalError> {
    let first = entries.first().ok_or_else(|| WalError::Config {
        param: "compaction".into(),
        expected: "at least one entry".into(),
        found: "none".into(),
    })?;
    if let Some(other) = entries
        .iter()
        .find(|e| e.topic_id != first.topic_id || e.partition != first.partition)
    {
        return Err(WalError::Config {
            param: "compaction".into(),
            expected: format!("entries of {}-{} only", first.topic, first.partition),
            found: format!("{}-{}", other.topic, other.partition),
        });
    }
    if entries
        .windows(2)
        .any(|w| w[1].base_offset <= w[0].last_offset)
    {
        return Err(WalError::Config {
            param: "compaction".into(),
            expected: "entries in offset order without overlap".into(),
            found: "overlapping or unordered entries".into(),
        });
    }
    let created_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut builder = ObjectBuilder::new(ObjectHeader {
        node_id,
        seq: COMPACTED_SEQ,
        created_ms,
    });
    for e in entries {
        e.check().map_err(|reason| WalError::Config {
            param: "compaction entry".into(),
            expected: "an entry the format can hold".into(),
            found: reason,
        })?;
        if e.external.is_some() {
            // A compacted object replaces the objects its batches were in:
            // it holds their bytes, never a reference to another object.
            return Err(WalError::Config {
                param: "compaction entry".into(),
                expected: "an entry with its data".into(),
                found: format!(
                    "an external entry of {}-{} at offset {}",
                    e.topic, e.partition, e.base_offset
                ),
            });
        }
        builder
            .push(e)
            .map_err(|err: FormatError| WalError::corrupt("compacted object".to_string(), err))?;
    }
    let encoded = builder
        .finish()
        .map_err(|err| WalError::corrupt("compacted object".to_string(), err))?;
    let key = compacted_key(
        node_id,
        &first.topic_id,
        first.partition,
        first.base_offset,
        created_ms,
    );
    let payload = encoded.payload();
    let started = Instant::now();
    let mut backoff = PUT_BACKOFF_INITIAL;
    let mut attempt = 0;
    loop {
        attempt += 1;
        WalStats::add(&stats.put_requests, 1);
        match store.put(&key, payload.clone()).await {
            Ok(_) => break,
            Err(e) => {
                WalStats::add(&stats.put_errors, 1);
                if attempt >= PUT_ATTEMPTS_MAX {
                    return Err(WalError::UploadFailed {
                        key: key.to_string(),
                        attempts: attempt,
                        elapsed_ms: started.elapsed().as_millis() as u64,
                        source: Arc::new(e),
                    });
                }
                warn!(object_key = %key, attempt, error = %e, "compacted object PUT failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    WalStats::add(&stats.compacted_objects, 1);
    WalStats::add(&stats.compacted_bytes, encoded.len());
    let key: Arc<str> = Arc::from(key.as_ref());
    Ok(encoded
        .index
        .entries
        .iter()
        .map(|i| WalLocation::of_entry(&key, node_id, COMPACTED_SEQ, i))
        .collect())
}

/// What [`scan_compacted`] found.
#[derive(Debug, Clone, Default)]
pub struct CompactedScan {
    /// Per partition (topic name, partition): its entries, dense where the
    /// objects are, in offset order, one copy of each offset.
    pub partitions: BTreeMap<(Arc<str>, i32), Vec<RecoveredEntry>>,
    /// Objects none of whose entries were kept (fully covered by another
    /// copy, left by a merge that crashed before deleting them).
    pub redundant: Vec<Path>,
    /// Objects whose index could not be read (corrupt or partial); they are
    /// reported, not deleted.
    pub skipped: Vec<(Path, WalError)>,
    pub objects_read: u64,
}

/// Reads the index of every compacted object of `node_id`. Where two objects
/// hold the same offsets (a merge whose old object was not yet deleted), the
/// larger object's copy is kept.
pub async fn scan_compacted(
    store: &dyn ObjectStore,
    node_id: u32,
) -> Result<CompactedScan, WalError> {
    scan_compacted_counted(store, node_id, &UNCOUNTED).await
}

pub(crate) async fn scan_compacted_counted(
    store: &dyn ObjectStore,
    node_id: u32,
    stats: &WalStats,
) -> Result<CompactedScan, WalError> {
    let folder = node_folder(node_id);
    let listed: Vec<_> = store
        .list(Some(&folder))
        .try_collect()
        .await
        .map_err(|e| WalError::store("LIST", folder.to_string(), e))?;
    let mut out = CompactedScan::default();
    let reads = futures_util::stream::iter(
        listed
            .into_iter()
            .filter(|m| m.location.filename().is_some_and(|f| f.ends_with(".obj"))),
    )
    .map(|m| async move {
        let r = read_index_counted(store, &m.location, Some(m.size), stats).await;
        (m, r)
    })
    .buffer_unordered(8)
    .collect::<Vec<_>>()
    .await;
    // (first offset, -object length) so that for equal starts the larger
    // object comes first and its copy wins.
    let mut objects = Vec::new();
    for (meta, r) in reads {
        match r {
            Ok(index) if !index.entries.is_empty() => {
                out.objects_read += 1;
                objects.push((meta.location, index));
            }
            Ok(_) => out.redundant.push(meta.location),
            Err(e) if e.is_retriable() => return Err(e),
            Err(e) => {
                warn!(object_key = %meta.location, error = %e, "skipped a compacted object");
                out.skipped.push((meta.location, e));
            }
        }
    }
    objects.sort_by_key(|(_, i)| {
        let first = &i.entries[0];
        (
            first.topic.clone(),
            first.partition,
            first.base_offset,
            std::cmp::Reverse(i.object_len),
        )
    });
    for (key, index) in objects {
        let k: Arc<str> = Arc::from(key.as_ref());
        let mut kept_any = false;
        let node_id = index.header.node_id;
        for entry in index.entries {
            let list = out
                .partitions
                .entry((entry.topic.clone(), entry.partition))
                .or_default();
            let end = list.last().map_or(i64::MIN, |e| e.entry.last_offset + 1);
            if entry.base_offset < end {
                continue;
            }
            kept_any = true;
            list.push(RecoveredEntry {
                key: k.clone(),
                seq: COMPACTED_SEQ,
                node_id,
                entry,
            });
        }
        if !kept_any {
            out.redundant.push(key);
        }
    }
    Ok(out)
}

/// What [`scan_compacted_partitions`] found.
#[derive(Debug, Clone, Default)]
pub struct CompactedPartitions {
    /// The wanted partitions' entries, per node one copy of each offset
    /// (the larger object's), by node, partition and offset.
    pub entries: Vec<RecoveredEntry>,
    /// Objects none of whose entries were kept.
    pub redundant: Vec<Path>,
    /// Objects whose index could not be read, or whose header names
    /// another node than their folder.
    pub skipped: Vec<(Path, WalError)>,
    pub objects_read: u64,
}

/// Parses a topic id folder name (32 hex digits).
fn parse_hex_id(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(id)
}

/// The last part of each common prefix of a delimited listing of `folder`.
async fn subfolders(store: &dyn ObjectStore, folder: &Path) -> Result<Vec<String>, WalError> {
    let listed = crate::recovery::with_retries(|| async {
        store
            .list_with_delimiter(Some(folder))
            .await
            .map_err(|e| WalError::store("LIST", folder.to_string(), e))
    })
    .await?;
    Ok(listed
        .common_prefixes
        .iter()
        .filter_map(|p| p.filename().map(str::to_string))
        .collect())
}

/// Reads the compacted objects of every node, of the partitions `want`
/// takes (by topic id and partition). It lists node folders, then each
/// node's topic folders, and lists and reads only the folders of wanted
/// topics; objects of unwanted partitions are not read. Per node, where two
/// objects hold the same offsets, the larger object's copy is kept (as
/// [`scan_compacted`] does); copies of different nodes are all answered.
pub async fn scan_compacted_partitions(
    store: &dyn ObjectStore,
    want: &(dyn Fn(&[u8; 16], i32) -> bool + Sync),
    stats: &WalStats,
    cache: Option<&crate::recovery::IndexCache>,
) -> Result<CompactedPartitions, WalError> {
    let mut topic_folders = Vec::new();
    for node in subfolders(store, &Path::from(DATA_PREFIX)).await? {
        let Ok(node_id) = node.parse::<u32>() else {
            warn!(folder = %node, "not a node folder under {DATA_PREFIX}/; ignored");
            continue;
        };
        let node_folder = node_folder(node_id);
        for topic in subfolders(store, &node_folder).await? {
            let Some(topic_id) = parse_hex_id(&topic) else {
                warn!(folder = %topic, node_id, "not a topic id folder; ignored");
                continue;
            };
            topic_folders.push((
                node_id,
                topic_id,
                Path::from(format!("{DATA_PREFIX}/{node_id}/{topic}")),
            ));
        }
    }
    // The topic folders are listed at once, not one after another.
    let listings: Vec<Result<_, WalError>> = futures_util::stream::iter(topic_folders)
        .map(|(node_id, topic_id, topic_folder)| async move {
            let listed: Vec<_> = crate::recovery::with_retries(|| async {
                store
                    .list(Some(&topic_folder))
                    .try_collect::<Vec<_>>()
                    .await
                    .map_err(|e| WalError::store("LIST", topic_folder.to_string(), e))
            })
            .await?;
            Ok((node_id, topic_id, listed))
        })
        .buffer_unordered(crate::recovery::RECOVERY_READS_INFLIGHT_MAX)
        .collect()
        .await;
    let listings = listings.into_iter().collect::<Result<Vec<_>, _>>()?;
    if let Some(cache) = cache {
        cache.keep_only(
            &format!("{DATA_PREFIX}/"),
            &listings
                .iter()
                .flat_map(|(_, _, l)| l.iter().map(|m| m.location.to_string()))
                .collect(),
        );
    }
    let mut candidates = Vec::new();
    for (node_id, topic_id, listed) in listings {
        for m in listed {
            let parts: Vec<_> = m.location.parts().collect();
            let [_, _, _, partition, file] = parts.as_slice() else {
                continue;
            };
            let Ok(partition) = partition.as_ref().parse::<i32>() else {
                continue;
            };
            if file.as_ref().ends_with(".obj") && want(&topic_id, partition) {
                candidates.push((node_id, m));
            }
        }
    }
    let reads: Vec<_> = futures_util::stream::iter(candidates)
        .map(|(node_id, m)| async move {
            // Compacted objects never change either: their indexes are
            // cached like the WAL objects'.
            let key = m.location.to_string();
            if let Some(index) = cache.and_then(|c| c.get(&key, m.size)) {
                return (node_id, m, Ok((*index).clone()));
            }
            let r = crate::recovery::with_retries(|| {
                read_index_counted(store, &m.location, Some(m.size), stats)
            })
            .await;
            if let (Some(cache), Ok(index)) = (cache, &r) {
                cache.put(&key, m.size, std::sync::Arc::new(index.clone()));
            }
            (node_id, m, r)
        })
        .buffer_unordered(crate::recovery::RECOVERY_READS_INFLIGHT_MAX)
        .collect()
        .await;
    let mut out = CompactedPartitions::default();
    let mut objects = Vec::new();
    for (node_id, meta, r) in reads {
        match r {
            Ok(index) if index.header.node_id != node_id => {
                let e = WalError::corrupt(
                    meta.location.to_string(),
                    FormatError::BadIndex {
                        reason: format!(
                            "header says node {}, the folder node {node_id}",
                            index.header.node_id
                        ),
                    },
                );
                warn!(object_key = %meta.location, error = %e, "skipped a compacted object");
                out.skipped.push((meta.location, e));
            }
            Ok(index) if !index.entries.is_empty() => {
                out.objects_read += 1;
                objects.push((meta.location, index));
            }
            Ok(_) => out.redundant.push(meta.location),
            Err(e @ WalError::Corrupt { .. }) => {
                // Reported; the partition its key names is blocked
                // (`recovery::unread_blocks`).
                warn!(object_key = %meta.location, error = %e, "skipped a compacted object");
                out.skipped.push((meta.location, e));
            }
            // Any store error fails the scan, NotFound included: a
            // compacted object gone since the listing was merged into one
            // this listing may not have seen, so only a new scan is whole.
            Err(e) => return Err(e),
        }
    }
    // Per node and partition, by first offset, the larger object first so
    // that its copy wins.
    objects.sort_by(|(ka, a), (kb, b)| {
        let (fa, fb) = (&a.entries[0], &b.entries[0]);
        (a.header.node_id, fa.topic_id, fa.partition, fa.base_offset)
            .cmp(&(b.header.node_id, fb.topic_id, fb.partition, fb.base_offset))
            .then(b.object_len.cmp(&a.object_len))
            .then(ka.cmp(kb))
    });
    let mut ends: BTreeMap<(u32, [u8; 16], i32), i64> = BTreeMap::new();
    for (key, index) in objects {
        let k: Arc<str> = Arc::from(key.as_ref());
        let node_id = index.header.node_id;
        let mut kept_any = false;
        for entry in index.entries {
            if !want(&entry.topic_id, entry.partition) {
                continue;
            }
            let end = ends
                .entry((node_id, entry.topic_id, entry.partition))
                .or_insert(i64::MIN);
            if entry.base_offset < *end {
                continue;
            }
            *end = entry.last_offset.saturating_add(1);
            kept_any = true;
            out.entries.push(RecoveredEntry {
                key: k.clone(),
                seq: COMPACTED_SEQ,
                node_id,
                entry,
            });
        }
        if !kept_any {
            out.redundant.push(key);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::ProducerFields;
    use bytes::Bytes;
    use object_store::memory::InMemory;

    fn entry(base: i64, last: i64, fill: u8) -> WalEntry {
        WalEntry {
            data_crc: None,
            topic: Arc::from("t"),
            topic_id: [7; 16],
            partition: 3,
            base_offset: base,
            last_offset: last,
            record_count: (last - base + 1) as u32,
            max_timestamp: base,
            producer: ProducerFields::default(),
            data: vec![Bytes::from(vec![fill; 100])],
            leader_epoch: 1,
            external: None,
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn compacted_keys_name_their_partition() {
        let id = [0xab; 16];
        let key = compacted_key(1, &id, 7, 99, 5);
        assert_eq!(parse_compacted_key(key.as_ref()), Some((id, 7)));
        assert_eq!(parse_compacted_key("wal/1/00000000000000000001.wal"), None);
        assert_eq!(parse_compacted_key("data/1/zz/7/x.obj"), None);
        assert_eq!(
            parse_compacted_key("data/1/abababababababababababababababab/7/x.obj/y"),
            None
        );
    }

    #[test]
    fn keys_list_in_offset_order() {
        let a = compacted_key(1, &[0xab; 16], 2, 99, 5);
        let b = compacted_key(1, &[0xab; 16], 2, 100, 1);
        assert!(a.as_ref() < b.as_ref());
        assert!(a
            .as_ref()
            .starts_with(partition_folder(1, &[0xab; 16], 2).as_ref()));
        assert_eq!(
            a.as_ref(),
            "data/1/abababababababababababababababab/2/00000000000000000099-0000000000005.obj"
        );
    }

    #[test]
    fn written_entries_read_back_and_scan() {
        rt().block_on(async {
            let store = InMemory::new();
            let entries = vec![entry(0, 4, 1), entry(5, 9, 2)];
            let locs = write_compacted(&store, 1, &entries, &UNCOUNTED)
                .await
                .expect("write");
            assert_eq!(locs.len(), 2);
            assert!(locs.iter().all(is_compacted));
            let b = crate::reader::read_entry(&store, &locs[1])
                .await
                .expect("read");
            assert_eq!(&b[..], &[2u8; 100][..]);
            let scan = scan_compacted(&store, 1).await.expect("scan");
            let p = &scan.partitions[&(Arc::from("t"), 3)];
            assert_eq!(
                p.iter().map(|e| e.entry.base_offset).collect::<Vec<_>>(),
                vec![0, 5]
            );
            assert!(scan.redundant.is_empty());
            // Another node's objects are not this node's.
            assert!(scan_compacted(&store, 2)
                .await
                .expect("scan")
                .partitions
                .is_empty());
        });
    }

    #[test]
    fn a_merged_object_wins_over_the_small_one_it_replaced() {
        rt().block_on(async {
            let store = InMemory::new();
            write_compacted(&store, 1, &[entry(0, 4, 1)], &UNCOUNTED)
                .await
                .expect("small");
            tokio::time::sleep(Duration::from_millis(3)).await;
            write_compacted(&store, 1, &[entry(0, 4, 1), entry(5, 9, 2)], &UNCOUNTED)
                .await
                .expect("merged");
            let scan = scan_compacted(&store, 1).await.expect("scan");
            let p = &scan.partitions[&(Arc::from("t"), 3)];
            assert_eq!(p.len(), 2);
            assert_eq!(p[0].key, p[1].key, "both offsets from the merged object");
            assert_eq!(scan.redundant.len(), 1);
            assert_ne!(scan.redundant[0].as_ref(), &*p[0].key);
        });
    }

    #[test]
    fn mixed_or_unordered_entries_are_refused() {
        rt().block_on(async {
            let store = InMemory::new();
            let mut other = entry(5, 9, 2);
            other.partition = 4;
            assert!(
                write_compacted(&store, 1, &[entry(0, 4, 1), other], &UNCOUNTED)
                    .await
                    .is_err()
            );
            assert!(
                write_compacted(&store, 1, &[entry(5, 9, 1), entry(0, 4, 2)], &UNCOUNTED)
                    .await
                    .is_err()
            );
            assert!(write_compacted(&store, 1, &[], &UNCOUNTED).await.is_err());
        });
    }
}
